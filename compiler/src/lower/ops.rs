//! Lowering of each op family to kernels.

use std::borrow::Cow;
use std::sync::Arc;

use rayon::prelude::*;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::conv::Window;
use incept_ir::ops::resize::CoordMode;
use incept_ir::ops::{Activation, Binary, Op, PoolKind, Step, Unary, Variadic};
use incept_ir::{DType, Tensor};

use super::{BufRef, LowerError, Lowerer};
use crate::Fault;
use crate::codegen::Tier;
use crate::codegen::kernels::conv::{Col2ImSpec, DepthwiseSpec, DwStep, Geom, Im2colSpec};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::gather::{GatherElementsSpec, GatherSpec, IndexNdSpec, ScatterMode};
use crate::codegen::kernels::gemm::{GemmSpec, GemmStep, Mat};
use crate::codegen::kernels::logic::{LogicOp, LogicSpec};
use crate::codegen::kernels::math::{Bin, KExpr, act_needs_helpers};
use crate::codegen::kernels::nd::{broadcast_strides, contiguous};
use crate::codegen::kernels::norm::{LayerNormSpec, LrnSpec};
use crate::codegen::kernels::pool::{GlobalPoolSpec, PoolSpec};
use crate::codegen::kernels::reduce::{ReduceSpec, SoftmaxSpec};
use crate::codegen::kernels::resample::{ResampleSpec, ResizeTapsSpec};
use crate::codegen::kernels::select::{ArgSpec, TopKSpec};
use crate::codegen::kernels::transposed::TransposedOutSpec;
use crate::codegen::kernels::typed::{CastSpec, F64MatMulSpec, TypedElementwiseSpec, TypedOp};
use crate::codegen::kernels::volume::{VolCol2ImSpec, VolGeom, VolIm2colSpec, VolPoolSpec};
use crate::codegen::kernels::winograd::{E_SKEW, WinoGeom, WinoInputSpec, WinoOutputSpec, transform_kernel};
use crate::codegen::kernels::winograd4::{self, Wino4InputSpec, WinoPadSpec};

/// Rows of the GEMM register tile, the K block and the panels per tile.
/// Rows of the GEMM register tile. 8 rows (8 accumulators, the B vector, a broadcast) leave
/// Cranelift's allocator room; 12 measured 3-5% slower on the zoo models, with spills in the
/// unrolled K loop, and 8 divides the usual channel counts.
const KC: usize = 512;
const M_PANELS: usize = 8;
const N_PANELS: usize = 16;

/// Most taps (kernel positions, resampling filter taps) a kernel unrolls: a 90x90 window. The
/// ONNX tests' largest pool window (60x80) fits; a window of millions of taps (SAME padding
/// allows any) would unroll into more code than memory holds.
const MAX_UNROLLED_TAPS: usize = 8192;

/// Kernel positions of a windowed op (a fused op's base included).
fn window_taps(op: &Op) -> Option<usize> {
    match op {
        Op::Conv(c) => Some(c.window.kernel_size()),
        Op::ConvTranspose(c) => Some(c.window.kernel_size()),
        Op::Pool(p) => Some(p.window.kernel_size()),
        Op::Fused(f) => window_taps(&f.base),
        _ => None,
    }
}

/// Which kernels compute a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvPath {
    /// The direct depthwise kernel (group = input channels).
    Depthwise,
    /// Winograd F(2x2, 3x3) or F(4x4, 3x3) (the output tile's side): transforms around a
    /// batch of GEMMs.
    Winograd(usize),
    /// im2col (or volumetric im2col) panels and the GEMM.
    Gemm,
}

/// How a fused kernel reads one epilogue operand.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AddLayout {
    /// Through a GEMM `Mat` over (rows, cols) of the output.
    Gemm(Mat),
    /// In a plane kernel: per channel (`true`) or in the output's own layout.
    Plane(bool),
}

impl<'g> Lowerer<'g> {
    fn unsupported(&self, id: NodeId, what: impl Into<String>) -> LowerError {
        let node = self.g.node(id);
        LowerError::Unsupported { node: node.name.clone(), op: node.op.name().to_string(), what: what.into() }
    }

    /// `Fault::Corrupt`: adds 0.25 to the node's first output after its own steps (1 to an
    /// integer one).
    pub(super) fn corrupt(&mut self, id: NodeId) -> Result<(), LowerError> {
        let out = ValueId::new(id, 0);
        let dt = self.g.ty(out).dtype;
        if dt.is_int() {
            let os = self.shape(out)?;
            let r = os.len();
            let (lead, cols) = if r == 0 { (vec![], 1) } else { (os[..r - 1].to_vec(), os[r - 1]) };
            let lead_strides: Vec<usize> = contiguous(&os)[..r.saturating_sub(1)].iter().map(|&x| x as usize).collect();
            let name = self.g.node(id).name.clone();
            let mut one = vec![0u8; dt.size()];
            one[0] = 1;
            let one = self.weight(&one, &format!("{name}.fault"));
            let spec = TypedElementwiseSpec {
                dtype: dt,
                dtypes: vec![dt, dt],
                ops: vec![TypedOp::Add],
                lead,
                cols,
                row_strides: vec![lead_strides, vec![0; r.saturating_sub(1)]],
                col_strides: vec![1, 0],
            };
            let dst = self.value(out)?;
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[dst, one], &[dst], false, &name, "Fault", 0);
            return Ok(());
        }
        self.f32_only(id, out)?;
        let os = self.shape(out)?;
        let dst = self.value(out)?;
        let spec = ElementwiseSpec::new(
            &os,
            std::slice::from_ref(&os),
            KExpr::bin(Bin::Ir(Binary::Add), KExpr::In(0), KExpr::Const(0.25)),
        );
        let tiles = spec.tiles();
        let name = self.g.node(id).name.clone();
        self.step(Arc::new(spec), tiles, &[dst], &[dst], false, &name, "Fault", 0);
        Ok(())
    }

    /// The value of `v` when it is known at compile time: a constant, or a ConstantOfShape
    /// (whose shape is static), evaluated by its reference semantics. Kernels that want constant
    /// weights (packed GEMM panels, Winograd) ask here; const-folding leaves large
    /// ConstantOfShape outputs unfolded so as not to bloat the model, and exporters build conv
    /// weights that way.
    pub(super) fn konst(&self, v: ValueId) -> Option<Cow<'g, Tensor>> {
        let g: &'g incept_ir::Graph = self.g;
        match &g.node(v.node).op {
            Op::Const(_) => g.const_value(v).map(Cow::Borrowed),
            Op::ConstantOfShape(c) => {
                let dims: Vec<i64> = g.ty(v).static_dims()?.iter().map(|&d| d as i64).collect();
                let shape = Tensor::from_vec(vec![dims.len()], dims);
                use incept_ir::ops::OpDef;
                c.eval(&[Some(&shape)]).ok()?.into_iter().next().map(Cow::Owned)
            }
            _ => None,
        }
    }

    /// Whether [`Self::konst`] knows `v`, without evaluating it.
    fn is_konst(&self, v: ValueId) -> bool {
        matches!(self.g.node(v.node).op, Op::Const(_) | Op::ConstantOfShape(_)) && self.g.ty(v).static_dims().is_some()
    }

    /// A ConstantOfShape read as an activation: a fill kernel writes it (once, where it is first
    /// read), instead of its whole value going into the weights. `None` for other values.
    pub(super) fn fill_constant(&mut self, v: ValueId) -> Result<Option<BufRef>, LowerError> {
        let Op::ConstantOfShape(c) = &self.g.node(v.node).op else { return Ok(None) };
        let name = self.g.node(v.node).name.clone();
        let elem = c.value.dtype().size();
        let one = self.weight(&c.value.bytes().clone(), &format!("{name}.value"));
        let n: usize = self.shape(v)?.iter().product();
        let dst = self.define(v)?;
        if n > 0 {
            let spec = CopySpec::new(&[n], vec![0], vec![1], 0, 0, elem);
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[one], &[dst], false, &name, "ConstantOfShape", 0);
        }
        Ok(Some(dst))
    }

    fn in_val(&self, id: NodeId, i: usize) -> Option<ValueId> {
        self.g.node(id).inputs().get(i).copied().flatten()
    }

    /// Refuses windows and filters with more taps than the kernels unroll into straight-line
    /// code (`MAX_UNROLLED_TAPS`): beyond it, code size and compile time blow up (a 2^31-tap
    /// pool that SAME padding made valid ran code generation out of memory).
    fn unrolled_taps(&self, id: NodeId, taps: usize) -> Result<(), LowerError> {
        if taps > MAX_UNROLLED_TAPS {
            return Err(
                self.unsupported(id, format!("{taps} taps per output (the JIT unrolls at most {MAX_UNROLLED_TAPS})"))
            );
        }
        Ok(())
    }

    fn f32_only(&self, id: NodeId, v: ValueId) -> Result<(), LowerError> {
        if self.g.ty(v).dtype != DType::F32 {
            return Err(self.unsupported(id, format!("{} data (the JIT computes in f32)", self.g.ty(v).dtype)));
        }
        Ok(())
    }

    pub(super) fn node(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        if let Some(taps) = window_taps(&node.op) {
            self.unrolled_taps(id, taps)?;
        }
        match &node.op {
            // Views: same bytes, another shape.
            Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_) | Op::Identity(_) | Op::Dropout(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let r = self.value(x)?;
                self.values.insert(out, r);
                if node.outputs.len() > 1 {
                    // Dropout at inference keeps everything: its mask is a constant of all true.
                    let mask = ValueId::new(id, 1);
                    let n: usize = self.shape(mask)?.iter().product();
                    let elem = self.g.ty(mask).dtype.size();
                    let mut bytes = vec![0u8; n * elem];
                    bytes.chunks_mut(elem.max(1)).for_each(|c| c[0] = 1);
                    let r = self.weight(&bytes, &format!("{name}.mask"));
                    self.values.insert(mask, r);
                }
                Ok(())
            }
            Op::Unary(_) | Op::Binary(_) | Op::Clip(_) | Op::Elementwise(_) | Op::Variadic(_) => self.elementwise(id),
            // Written where it is first read as an activation (see `fill_constant`); kernels that
            // want it as constant weights evaluate it at compile time (see `konst`).
            Op::ConstantOfShape(_) => Ok(()),
            Op::Cast(c) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let from = self.g.ty(x).dtype;
                if from == c.to {
                    let r = self.value(x)?;
                    self.values.insert(out, r);
                    return Ok(());
                }
                if from == DType::F16 || c.to == DType::F16 {
                    return Err(self.unsupported(id, format!("Cast from {from} to {}", c.to)));
                }
                let spec = CastSpec { from, to: c.to, n: self.shape(x)?.iter().product() };
                let src = self.value(x)?;
                let dst = self.define(out)?;
                let tiles = spec.tiles();
                self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Cast", 0);
                Ok(())
            }
            Op::MatMul(_) if self.g.ty(out).dtype == DType::F64 => self.matmul_f64(id),
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul(_) => {
                let all = node.inputs().len();
                self.linear(id, &node.op.clone(), all, &[])
            }
            Op::Fused(f) => {
                let f = f.clone();
                let base = match self.fault {
                    Some(Fault::EpilogueOperandAsBias) => node.inputs().len(),
                    _ => f.base_operands(node.inputs()).len(),
                };
                self.linear(id, &f.base, base, &f.steps)
            }
            Op::Pool(p) => {
                let p = p.clone();
                if node.outputs.len() > 1 {
                    return self.max_pool_with_indices(id, &p);
                }
                self.pool(id, p.kind == PoolKind::Max, &p.window, p.count_include_pad)
            }
            Op::GlobalPool(p) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                self.f32_only(id, x)?;
                let s = self.shape(x)?;
                let spec =
                    GlobalPoolSpec { max: p.kind == PoolKind::Max, planes: s[0] * s[1], size: s[2..].iter().product() };
                let src = self.value(x)?;
                let dst = self.define(out)?;
                self.step(Arc::new(spec.clone()), spec.planes, &[src], &[dst], false, &name, node.op.name(), 0);
                Ok(())
            }
            Op::Softmax(sm) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let f64 = self.g.ty(x).dtype == DType::F64;
                if !f64 {
                    self.f32_only(id, x)?;
                }
                let s = self.shape(x)?;
                let axis = sm.axis as usize;
                let n: usize = s.iter().product();
                let (len, stride) = if sm.coerce_2d {
                    (s[axis..].iter().product(), 1)
                } else {
                    (s[axis], s[axis + 1..].iter().product())
                };
                let spec = SoftmaxSpec { groups: n / len.max(1), len, stride, log: sm.log, f64 };
                let src = self.value(x)?;
                let dst = self.define(out)?;
                self.step(Arc::new(spec.clone()), spec.groups, &[src], &[dst], true, &name, node.op.name(), 0);
                Ok(())
            }
            Op::Reduce(r) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let f64 = self.g.ty(x).dtype == DType::F64;
                if !f64 {
                    self.f32_only(id, x)?;
                }
                let s = self.shape(x)?;
                let given = match self.in_val(id, 1) {
                    Some(a) => Some(
                        self.konst(a)
                            .ok_or_else(|| self.unsupported(id, "axes computed at run time"))?
                            .to_i64s()
                            .map_err(|e| self.unsupported(id, e.to_string()))?,
                    ),
                    None => None,
                };
                let mask = r.axes(s.len(), given.as_deref()).map_err(|e| self.unsupported(id, e.to_string()))?;
                let src = self.value(x)?;
                let Some(mask) = mask else {
                    self.values.insert(out, src);
                    return Ok(());
                };
                let axes: Vec<usize> = (0..s.len()).filter(|&a| mask[a]).collect();
                if axes.is_empty() {
                    self.values.insert(out, src);
                    return Ok(());
                }
                let kind = r.kind;
                // Runs of adjacent axes, reduced last run first where that gives the same result
                // (a mean of means over equal-sized groups is the mean).
                let mut runs: Vec<(usize, usize)> = vec![];
                for &a in &axes {
                    match runs.last_mut() {
                        Some((_, hi)) if *hi + 1 == a => *hi = a,
                        _ => runs.push((a, a)),
                    }
                }
                if !kind.splits() && runs.len() > 1 {
                    // A max of maxes would not keep "the first element, then strictly greater"
                    // over the whole group (nor is an L2 of L2s, or a log of logs, the same
                    // function): move the reduced axes last, then one pass.
                    let kept: Vec<usize> = (0..s.len()).filter(|&a| !mask[a]).collect();
                    let perm: Vec<usize> = kept.iter().chain(&axes).copied().collect();
                    let istr = contiguous(&s);
                    let dims: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                    let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
                    let n: usize = s.iter().product();
                    let esz = if f64 { 8 } else { 4 };
                    let moved = self.scratch((n * esz).max(esz), &format!("{name}.moved"));
                    let spec = CopySpec::new(&dims, strides, contiguous(&dims), 0, 0, esz);
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[moved], false, &name, "Transpose", 0);
                    let outputs: usize = kept.iter().map(|&a| s[a]).product();
                    let spec = ReduceSpec { outputs, len: n / outputs.max(1), inner: 1, kind, f64 };
                    let dst = self.define(out)?;
                    let helpers = spec.needs_helpers();
                    self.step(Arc::new(spec), outputs, &[moved], &[dst], helpers, &name, node.op.name(), 0);
                    return Ok(());
                }
                let mut shape = s.clone();
                let mut cur = src;
                for (k, &(lo, hi)) in runs.iter().rev().enumerate() {
                    let len: usize = shape[lo..=hi].iter().product();
                    let inner: usize = shape[hi + 1..].iter().product();
                    let outputs = shape[..lo].iter().product::<usize>() * inner;
                    shape[lo..=hi].iter_mut().for_each(|d| *d = 1);
                    let dst = if k + 1 == runs.len() {
                        self.define(out)?
                    } else {
                        let esz = if f64 { 8 } else { 4 };
                        self.scratch((outputs * esz).max(esz), &format!("{name}.run{k}"))
                    };
                    let spec = ReduceSpec { outputs, len, inner, kind, f64 };
                    let helpers = spec.needs_helpers();
                    self.step(Arc::new(spec), outputs, &[cur], &[dst], helpers, &name, node.op.name(), 0);
                    cur = dst;
                }
                Ok(())
            }
            Op::Concat(c) => {
                let s = self.shape(out)?;
                let axis = c.axis as usize;
                let dst = self.define(out)?;
                let ostr = contiguous(&s);
                let elem = self.g.ty(out).dtype.size();
                let mut at = 0usize;
                for v in node.input_values().collect::<Vec<_>>() {
                    let is = self.shape(v)?;
                    let src = self.value(v)?;
                    let slot = BufRef { buf: dst.buf, offset: dst.offset + at * ostr[axis] as usize * elem };
                    if src == slot {
                        // Its producer already wrote it in place.
                        at += is[axis];
                        continue;
                    }
                    let spec =
                        CopySpec::new(&is, contiguous(&is), ostr.clone(), 0, (at * ostr[axis] as usize) as isize, elem);
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Concat", 0);
                    at += is[axis];
                }
                Ok(())
            }
            Op::Split(sp) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let s = self.shape(x)?;
                let axis = sp.axis as usize;
                let src = self.value(x)?;
                let istr = contiguous(&s);
                let mut at = 0usize;
                for slot in 0..node.outputs.len() {
                    let v = ValueId::new(id, slot);
                    let os = self.shape(v)?;
                    self.strided_copy(v, src, &os, istr.clone(), (at * istr[axis] as usize) as isize, &name, "Split")?;
                    at += os[axis];
                }
                Ok(())
            }
            Op::Transpose(t) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let s = self.shape(x)?;
                let istr = contiguous(&s);
                let dims: Vec<usize> = t.perm.iter().map(|&p| s[p]).collect();
                let strides: Vec<isize> = t.perm.iter().map(|&p| istr[p]).collect();
                let src = self.value(x)?;
                self.strided_copy(out, src, &dims, strides, 0, &name, "Transpose")
            }
            Op::Expand(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let (s, o) = (self.shape(x)?, self.shape(out)?);
                let src = self.value(x)?;
                self.strided_copy(out, src, &o, broadcast_strides(&s, &o), 0, &name, "Expand")
            }
            Op::Slice(_) => self.slice(id),
            Op::DepthToSpace(d) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let s = self.shape(x)?;
                let (n, c, h, w, b) = (s[0], s[1], s[2], s[3], d.blocksize);
                let cb = c / (b * b);
                // Output [n, cb, h, b, w, b] read from the input viewed as 6-D.
                let (split, perm): (Vec<usize>, [usize; 6]) = if d.crd {
                    (vec![n, cb, b, b, h, w], [0, 1, 4, 2, 5, 3])
                } else {
                    (vec![n, b, b, cb, h, w], [0, 3, 4, 1, 5, 2])
                };
                let istr = contiguous(&split);
                let dims: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
                let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
                let src = self.value(x)?;
                self.strided_copy(out, src, &dims, strides, 0, &name, "DepthToSpace")
            }
            Op::SpaceToDepth(d) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let s = self.shape(x)?;
                let (n, c, h, w, b) = (s[0], s[1], s[2], s[3], d.blocksize);
                let split = vec![n, c, h / b, b, w / b, b];
                let perm = [0, 3, 5, 1, 2, 4];
                let istr = contiguous(&split);
                let dims: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
                let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
                let src = self.value(x)?;
                self.strided_copy(out, src, &dims, strides, 0, &name, "SpaceToDepth")
            }
            Op::Gather(gt) => {
                let (x, iv) = (self.in_val(id, 0), self.in_val(id, 1));
                let (Some(x), Some(iv)) = (x, iv) else { return Err(self.unsupported(id, "a missing input")) };
                let Some(idx) = self.konst(iv) else {
                    return self.gather_runtime(id, x, iv, gt.axis as usize);
                };
                let ids = idx.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?;
                let s = self.shape(x)?;
                let axis = gt.axis as usize;
                let (outer, d, inner): (usize, usize, usize) =
                    (s[..axis].iter().product(), s[axis], s[axis + 1..].iter().product());
                let src = self.value(x)?;
                let dst = self.define(out)?;
                let elem = self.g.ty(out).dtype.size();
                for (k, &i) in ids.iter().enumerate() {
                    let i = if i < 0 { i + d as i64 } else { i } as usize;
                    // out[o, k, in] = x[o, i, in]
                    let spec = CopySpec::new(
                        &[outer, inner],
                        vec![(d * inner) as isize, 1],
                        vec![(ids.len() * inner) as isize, 1],
                        (i * inner) as isize,
                        (k * inner) as isize,
                        elem,
                    );
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Gather", 0);
                }
                Ok(())
            }
            Op::Pad(p) => {
                let p = p.clone();
                self.pad(id, &p)
            }
            Op::BatchNorm(bn) => {
                // Parameters known only at run time (constant ones were folded away).
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                self.f32_only(id, x)?;
                let xs = self.shape(x)?;
                let mut inputs = vec![x];
                let mut shapes = vec![xs.clone()];
                for i in 1..5 {
                    let v = self.in_val(id, i).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                    let mut ps = self.shape(v)?;
                    if ps.len() == 1 {
                        ps.resize(xs.len() - 1, 1);
                    }
                    inputs.push(v);
                    shapes.push(ps);
                }
                // (x - mean) / sqrt(var + eps) * scale + bias
                let e = KExpr::bin(
                    Bin::Ir(Binary::Add),
                    KExpr::bin(
                        Bin::Ir(Binary::Mul),
                        KExpr::bin(
                            Bin::Ir(Binary::Div),
                            KExpr::bin(Bin::Ir(Binary::Sub), KExpr::In(0), KExpr::In(3)),
                            KExpr::act(
                                Activation::Unary(Unary::Sqrt),
                                KExpr::bin(Bin::Ir(Binary::Add), KExpr::In(4), KExpr::Const(bn.epsilon)),
                            ),
                        ),
                        KExpr::In(1),
                    ),
                    KExpr::In(2),
                );
                self.emit_elementwise(id, &inputs, &shapes, e)
            }
            Op::Lrn(l) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                self.f32_only(id, x)?;
                let s = self.shape(x)?;
                let spec = LrnSpec {
                    n: s[0],
                    c: s[1],
                    inner: s[2..].iter().product(),
                    size: l.size,
                    alpha: l.alpha,
                    beta: l.beta,
                    bias: l.bias,
                };
                let src = self.value(x)?;
                let dst = self.define(out)?;
                self.step(Arc::new(spec), s[0] * s[1], &[src], &[dst], true, &name, "LRN", 0);
                Ok(())
            }
            Op::Compare(c) => {
                let op = LogicOp::Compare(*c);
                self.logic(id, op)
            }
            Op::Logical(l) => {
                let op = LogicOp::Logical(*l);
                self.logic(id, op)
            }
            Op::Where(_) => self.logic(id, LogicOp::Where),
            Op::Mod(m) => {
                let op = LogicOp::Mod { fmod: m.fmod };
                self.logic(id, op)
            }
            Op::Einsum(e) => Err(self.unsupported(
                id,
                format!(
                    "the Einsum '{}' (the JIT runs one- and two-input forms without an ellipsis or a repeated label)",
                    e.equation
                ),
            )),
            Op::GatherNd(_) => self.index_nd(id, None),
            Op::ScatterNd(sc) => {
                use incept_ir::ops::scatter::Reduction;
                let mode = match sc.reduction {
                    Reduction::None => ScatterMode::Replace,
                    Reduction::Add => ScatterMode::Add,
                    Reduction::Mul => ScatterMode::Mul,
                    Reduction::Max => ScatterMode::Max,
                    Reduction::Min => ScatterMode::Min,
                };
                if mode != ScatterMode::Replace {
                    self.f32_only(id, out)?;
                }
                self.index_nd(id, Some(mode))
            }
            Op::LayerNorm(ln) => {
                let ln = ln.clone();
                self.layer_norm(id, &ln)
            }
            Op::Resize(r) => {
                let r = r.clone();
                self.resize(id, &r)
            }
            Op::InstanceNorm(inn) => {
                let epsilon = inn.epsilon;
                self.instance_norm(id, epsilon)
            }
            Op::Tile(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let (s, o) = (self.shape(x)?, self.shape(out)?);
                // The output as [repeat, dim] pairs: the repeat's stride is 0 in the input.
                let istr = contiguous(&s);
                let (mut dims, mut strides) = (vec![], vec![]);
                for d in 0..s.len() {
                    let reps = o[d].checked_div(s[d]).unwrap_or(1);
                    dims.extend([reps, s[d]]);
                    strides.extend([0, istr[d]]);
                }
                let src = self.value(x)?;
                self.strided_copy(out, src, &dims, strides, 0, &name, "Tile")
            }
            Op::ArgReduce(a) => {
                let a = a.clone();
                self.arg_reduce(id, &a)
            }
            Op::TopK(t) => {
                let largest = t.largest;
                self.top_k(id, t.axis as usize, largest)
            }
            Op::GatherElements(ge) => {
                let axis = ge.axis as usize;
                self.gather_elements(id, axis)
            }
            other => Err(self.unsupported(id, format!("{} yet", other.name()))),
        }
    }

    /// Comparisons, logic, Where and Mod: one scalar kernel over the broadcast inputs.
    fn logic(&mut self, id: NodeId, op: LogicOp) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let ins: Vec<ValueId> = self.g.node(id).input_values().collect();
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let dtypes: Vec<DType> = ins.iter().map(|&v| self.g.ty(v).dtype).collect();
        if let Some(d) = dtypes.iter().find(|d| matches!(d, DType::F16)) {
            return Err(self.unsupported(id, format!("{d} data")));
        }
        let r = os.len();
        let (lead, cols) = if r == 0 { (vec![], 1) } else { (os[..r - 1].to_vec(), os[r - 1]) };
        let (mut row_strides, mut col_strides) = (vec![], vec![]);
        for &v in &ins {
            let st = broadcast_strides(&self.shape(v)?, &os);
            row_strides.push(st[..r.saturating_sub(1)].iter().map(|&x| x as usize).collect());
            col_strides.push(if r == 0 { 0 } else { st[r - 1] as usize });
        }
        let spec = LogicSpec { op, dtypes, out: self.g.ty(out).dtype, lead, cols, row_strides, col_strides };
        let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let (tiles, helpers) = (spec.tiles(), spec.needs_helpers());
        let op_name = self.g.node(id).op.name().to_string();
        self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, &op_name, 0);
        Ok(())
    }

    /// GatherND, or ScatterND (`scatter`): with indices known at compile time and no reduction,
    /// one copy per index tuple (after copying the data, for ScatterND); otherwise one kernel
    /// that reads the tuples at run time.
    fn index_nd(&mut self, id: NodeId, scatter: Option<ScatterMode>) -> Result<(), LowerError> {
        const MAX_COPIES: usize = 256;
        let name = self.g.node(id).name.clone();
        let op_name = self.g.node(id).op.name();
        let (Some(x), Some(iv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let xs = self.shape(x)?;
        let is = self.shape(iv)?;
        let k = *is.last().unwrap_or(&0);
        if k == 0 || k > xs.len() || xs[..k].contains(&0) {
            return Err(self.unsupported(id, format!("index tuples of length {k} into {xs:?}")));
        }
        let tuples: usize = is[..is.len() - 1].iter().product();
        let inner: usize = xs[k..].iter().product();
        let out = ValueId::new(id, 0);
        let elem = self.g.ty(out).dtype.size();
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let copy = |this: &mut Self, n: usize, from: BufRef, at: usize, to: usize| {
            if n == 0 {
                return;
            }
            let spec = CopySpec::new(&[n], vec![1], vec![1], at as isize, to as isize, elem);
            let tiles = spec.tiles();
            this.step(Arc::new(spec), tiles, &[from], &[dst], false, &name, op_name, 0);
        };
        let upd = match scatter {
            Some(_) => {
                let u = self.in_val(id, 2).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let ub = self.value(u)?;
                copy(self, xs.iter().product(), src, 0, 0);
                Some(ub)
            }
            None => None,
        };
        let known = self.konst(iv).map(|t| t.to_i64s()).transpose().map_err(|e| self.unsupported(id, e.to_string()))?;
        if let (Some(ids), true) = (known, tuples <= MAX_COPIES && scatter.is_none_or(|m| m == ScatterMode::Replace)) {
            for (n, t) in ids.chunks(k).enumerate() {
                let mut o = 0usize;
                for (d, &i) in t.iter().enumerate() {
                    let len = xs[d] as i64;
                    let j = if i < 0 { i + len } else { i };
                    if j < 0 || j >= len {
                        return Err(self.unsupported(id, format!("index {i} out of range for dim {d} of size {len}")));
                    }
                    o = o * xs[d] + j as usize;
                }
                match upd {
                    Some(ub) => copy(self, inner, ub, n * inner, o * inner),
                    None => copy(self, inner, src, o * inner, n * inner),
                }
            }
            return Ok(());
        }
        let spec = IndexNdSpec { dims: xs[..k].to_vec(), inner, tuples, elem, scatter };
        let idx = self.value(iv)?;
        let tiles = spec.tiles();
        if tiles > 0 {
            let dims = xs[..k].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
            let what = format!("an index is outside the data's dims [{dims}]");
            self.checked_index_step(Arc::new(spec), tiles, &[upd.unwrap_or(src), idx], dst, &name, op_name, what);
        }
        Ok(())
    }

    /// LayerNormalization on rows of the normalised dims; scale and bias become rows of `len`
    /// floats (a constant one broadcast into the weights, a computed one used as it is when it
    /// already has the normalised dims' size).
    fn layer_norm(&mut self, id: NodeId, ln: &incept_ir::ops::LayerNorm) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let n_out = self.g.node(id).outputs.len();
        let stats = (1..n_out).any(|slot| self.g.is_used(ValueId::new(id, slot)));
        let xs = self.shape(x)?;
        let axis = ln.axis as usize;
        let (rows, len) = ln.rows(&xs);
        let row = |this: &mut Self, slot: usize, what: &str| -> Result<Option<BufRef>, LowerError> {
            let Some(v) = this.in_val(id, slot) else { return Ok(None) };
            this.f32_only(id, v)?;
            let ps = this.shape(v)?;
            if ps.iter().product::<usize>() == len {
                return this.value(v).map(Some);
            }
            let Some(t) = this.konst(v) else {
                return Err(this.unsupported(id, format!("a {what} that is broadcast and computed at run time")));
            };
            let vals = t.to_f64s().map_err(|e| this.unsupported(id, e.to_string()))?;
            let offs = incept_ir::ops::binary::broadcast_offsets(&ps, &xs[axis..]);
            let full: Vec<f32> = offs.iter().map(|&o| vals[o] as f32).collect();
            Ok(Some(this.weight_f32(&full, &format!("{name}.{what}"))))
        };
        let scale = row(self, 1, "scale")?.ok_or_else(|| self.unsupported(id, "a missing scale"))?;
        let bias = row(self, 2, "bias")?;
        let spec = LayerNormSpec { rows, len, epsilon: ln.epsilon, bias: bias.is_some(), stats, per_channel: None };
        let src = self.value(x)?;
        let mut writes = vec![self.define(ValueId::new(id, 0))?];
        if stats {
            // Both statistics are written whichever is read; an unread one gets a scratch buffer.
            for slot in 1..3 {
                let v = ValueId::new(id, slot);
                writes.push(if slot < n_out {
                    self.define(v)?
                } else {
                    self.scratch(rows * 4, &format!("{name}.stat{slot}"))
                });
            }
        }
        let reads: Vec<BufRef> = [Some(src), Some(scale), bias].into_iter().flatten().collect();
        self.step(Arc::new(spec), rows, &reads, &writes, false, &name, "LayerNormalization", 0);
        Ok(())
    }

    /// InstanceNormalization: the LayerNormalization kernel over rows of the spatial dims, with
    /// one scale and bias per channel.
    fn instance_norm(&mut self, id: NodeId, epsilon: f32) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let ins: Vec<Option<ValueId>> = (0..3).map(|i| self.in_val(id, i)).collect();
        let [Some(x), Some(scale), Some(bias)] = ins[..] else { return Err(self.unsupported(id, "a missing input")) };
        for v in [x, scale, bias] {
            self.f32_only(id, v)?;
        }
        let xs = self.shape(x)?;
        let (rows, len) = (xs[0] * xs[1], xs[2..].iter().product::<usize>());
        if len == 0 || rows == 0 {
            return Err(self.unsupported(id, "an empty input"));
        }
        let spec = LayerNormSpec { rows, len, epsilon, bias: true, stats: false, per_channel: Some(xs[1]) };
        let reads = [self.value(x)?, self.value(scale)?, self.value(bias)?];
        let dst = self.define(ValueId::new(id, 0))?;
        self.step(Arc::new(spec), rows, &reads, &[dst], false, &name, "InstanceNormalization", 0);
        Ok(())
    }

    /// The input of ArgMax/ArgMin/TopK as `[outer, len, inner]` around `axis`, and whether it is f64.
    fn around_axis(&self, id: NodeId, x: ValueId, axis: usize) -> Result<(usize, usize, usize, bool), LowerError> {
        let f64 = self.g.ty(x).dtype == DType::F64;
        if !f64 {
            self.f32_only(id, x)?;
        }
        let s = self.shape(x)?;
        let (outer, len, inner) = incept_ir::ops::select::split_at_axis(&s, axis);
        if len == 0 {
            return Err(self.unsupported(id, "an empty axis"));
        }
        Ok((outer, len, inner, f64))
    }

    fn arg_reduce(&mut self, id: NodeId, a: &incept_ir::ops::ArgReduce) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (outer, len, inner, f64) = self.around_axis(id, x, a.axis as usize)?;
        let groups = outer * inner;
        let spec = ArgSpec { groups, len, inner, max: a.max, last: a.select_last_index, f64 };
        let src = self.value(x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let op_name = self.g.node(id).op.name();
        self.step(Arc::new(spec), groups, &[src], &[dst], false, &name, op_name, 0);
        Ok(())
    }

    fn top_k(&mut self, id: NodeId, axis: usize, largest: bool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (outer, len, inner, f64) = self.around_axis(id, x, axis)?;
        let k = self.shape(ValueId::new(id, 0))?[axis];
        let groups = outer * inner;
        let spec = TopKSpec { groups, len, inner, k, largest, f64 };
        let src = self.value(x)?;
        let writes = [self.define(ValueId::new(id, 0))?, self.define(ValueId::new(id, 1))?];
        if k > 0 {
            self.step(Arc::new(spec), groups, &[src], &writes, false, &name, "TopK", 0);
        }
        Ok(())
    }

    fn gather_elements(&mut self, id: NodeId, axis: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let (Some(x), Some(iv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let index_bytes = self.index_bytes(id, iv)?;
        let out = ValueId::new(id, 0);
        let (data_dims, idx_dims) = (self.shape(x)?, self.shape(iv)?);
        let dst = self.define(out)?;
        if idx_dims.iter().product::<usize>() == 0 {
            return Ok(());
        }
        if data_dims[axis] == 0 {
            return Err(self.unsupported(id, "gathering from an empty axis"));
        }
        let what = format!("an index is outside [-{0}, {0})", data_dims[axis]);
        let spec = GatherElementsSpec { data_dims, idx_dims, axis, elem: self.g.ty(out).dtype.size(), index_bytes };
        let (src, idx) = (self.value(x)?, self.value(iv)?);
        let tiles = spec.tiles();
        self.checked_index_step(Arc::new(spec), tiles, &[src, idx], dst, &name, "GatherElements", what);
        Ok(())
    }

    /// Resize as one resampling step per changed axis, with tap tables from the op's own plan.
    fn resize(&mut self, id: NodeId, r: &incept_ir::ops::Resize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let mut shape = self.shape(x)?;
        let konst = |i: usize, what: &str| -> Result<Option<incept_ir::Tensor>, LowerError> {
            match self.in_val(id, i) {
                None => Ok(None),
                Some(v) => match self.konst(v) {
                    Some(t) => Ok(Some(t.into_owned())),
                    None => Err(self.unsupported(id, format!("{what} computed at run time"))),
                },
            }
        };
        let err = |e: &dyn std::fmt::Display| self.unsupported(id, e.to_string());
        // The region of interest matters to tf_crop_and_resize only. Given at run time, it
        // leaves the passes' shapes alone, and the tap tables of the axes it covers are computed
        // by a kernel (see `ResizeTapsSpec`).
        let roi_in = if r.coord == CoordMode::TfCropAndResize { self.in_val(id, 1) } else { None };
        let runtime_roi = roi_in.filter(|&v| !self.is_konst(v));
        let roi = match roi_in {
            Some(_) if runtime_roi.is_none() => {
                konst(1, "a region of interest")?.map(|t| t.to_f64s()).transpose().map_err(|e| err(&e))?
            }
            _ => None,
        };
        let scales = konst(2, "scales")?.map(|t| t.to_f64s()).transpose().map_err(|e| err(&e))?;
        let sizes = konst(3, "sizes")?.map(|t| t.to_i64s()).transpose().map_err(|e| err(&e))?;
        let passes = r.passes(&shape, roi.as_deref(), scales.as_deref(), sizes.as_deref()).map_err(|e| err(&e))?;
        let out = ValueId::new(id, 0);
        let mut cur = self.value(x)?;
        if passes.is_empty() {
            self.values.insert(out, cur);
            return Ok(());
        }
        let n = passes.len();
        let rank = shape.len();
        for (k, p) in passes.into_iter().enumerate() {
            let outer: usize = shape[..p.axis].iter().product();
            let inner: usize = shape[p.axis + 1..].iter().product();
            let at = match runtime_roi {
                Some(v) => {
                    let len = self.shape(v)?.iter().product();
                    r.roi_index(rank, p.axis, len).map_err(|e| self.unsupported(id, e.to_string()))?.map(|at| (v, at))
                }
                None => None,
            };
            let (offs, wts, bias, taps) = match at {
                Some((v, roi_at)) => {
                    let roi_f64 = match self.g.ty(v).dtype {
                        DType::F32 => false,
                        DType::F64 => true,
                        other => return Err(self.unsupported(id, format!("a region of interest of {other}"))),
                    };
                    let spec = ResizeTapsSpec {
                        resize: r.clone(),
                        d_in: p.d_in,
                        d_out: p.d_out,
                        scale: p.scale,
                        inner,
                        taps: 0,
                        roi_f64,
                        roi_at,
                    };
                    let taps = spec.window().1;
                    self.unrolled_taps(id, taps)?;
                    let spec = ResizeTapsSpec { taps, ..spec };
                    let src = self.value(v)?;
                    let offs = self.scratch((p.d_out * taps * 8).max(8), &format!("{name}.taps{k}"));
                    let wts = self.scratch((p.d_out * taps * 4).max(4), &format!("{name}.weights{k}"));
                    let bias = self.scratch((p.d_out * 4).max(4), &format!("{name}.bias{k}"));
                    self.step(Arc::new(spec), p.d_out, &[src], &[offs, wts, bias], false, &name, "ResizeTaps", 0);
                    (offs, wts, bias, taps)
                }
                None => {
                    let taps = p.taps.iter().map(|t| t.as_ref().map_or(0, Vec::len)).max().unwrap_or(0);
                    self.unrolled_taps(id, taps)?;
                    let (mut offs, mut wts, mut bias) = (vec![], vec![], vec![]);
                    for t in &p.taps {
                        let t = t.as_deref().unwrap_or(&[]);
                        for k in 0..taps {
                            let (i, w) = t.get(k).copied().unwrap_or((0, 0.0));
                            offs.extend_from_slice(&((i * inner * 4) as i64).to_le_bytes());
                            wts.push(w as f32);
                        }
                        bias.push(if t.is_empty() { r.extrapolation_value } else { -0.0 });
                    }
                    let offs = self.weight(&offs, &format!("{name}.taps{k}"));
                    let wts = self.weight_f32(&wts, &format!("{name}.weights{k}"));
                    let bias = self.weight_f32(&bias, &format!("{name}.bias{k}"));
                    (offs, wts, bias, taps)
                }
            };
            shape[p.axis] = p.d_out;
            let dst = if k + 1 == n {
                self.define(out)?
            } else {
                let bytes = shape.iter().product::<usize>() * 4;
                self.scratch(bytes.max(4), &format!("{name}.pass{k}"))
            };
            let spec = ResampleSpec { outer, d_in: p.d_in, d_out: p.d_out, inner, taps };
            let tiles = spec.tiles();
            let flops = (tiles * inner * taps * 2) as u64;
            self.step(Arc::new(spec), tiles, &[cur, offs, wts, bias], &[dst], false, &name, "Resize", flops);
            cur = dst;
        }
        Ok(())
    }

    /// Unary, binary, clip, variadic and fused elementwise ops.
    fn elementwise(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let ins: Vec<ValueId> = node.input_values().collect();
        let out_ty = self.g.ty(ValueId::new(id, 0)).dtype;
        if out_ty != DType::F32 || ins.iter().any(|&v| self.g.ty(v).dtype != DType::F32) {
            return self.typed_elementwise(id, out_ty);
        }
        let (expr, inputs): (KExpr, Vec<ValueId>) = match &node.op {
            Op::Unary(u) => (KExpr::act(Activation::Unary(u.clone()), KExpr::In(0)), vec![ins[0]]),
            Op::Binary(b) => (KExpr::bin(Bin::Ir(*b), KExpr::In(0), KExpr::In(1)), ins.clone()),
            Op::Clip(_) => {
                // The lower bound, then the upper (so lo > hi gives hi). A constant bound folds
                // into the kernel; one computed at run time is read as a broadcast scalar.
                let mut e = KExpr::In(0);
                let mut inputs = vec![ins[0]];
                for (i, b) in [(1, Bin::AtLeast), (2, Bin::AtMost)] {
                    let Some(v) = self.in_val(id, i) else { continue };
                    let rhs = match self.konst(v) {
                        Some(t) => match t.to_f64s().ok().and_then(|x| x.first().copied()) {
                            Some(c) => KExpr::Const(c as f32),
                            None => continue,
                        },
                        None => {
                            inputs.push(v);
                            KExpr::In(inputs.len() - 1)
                        }
                    };
                    e = KExpr::bin(b, e, rhs);
                }
                (e, inputs)
            }
            Op::Elementwise(e) => (KExpr::from_ir(&e.expr), ins.clone()),
            Op::Variadic(v) => {
                let b = match v {
                    Variadic::Sum => Bin::Ir(Binary::Add),
                    Variadic::Max => Bin::Max,
                    Variadic::Min => Bin::Min,
                };
                let mut e = KExpr::In(0);
                for i in 1..ins.len() {
                    e = KExpr::bin(b, e, KExpr::In(i));
                }
                (e, ins.clone())
            }
            _ => return Err(self.unsupported(id, "this op as elementwise")),
        };
        let shapes = inputs.iter().map(|&v| self.shape(v)).collect::<Result<Vec<_>, _>>()?;
        self.emit_elementwise(id, &inputs, &shapes, expr)
    }

    fn emit_elementwise(
        &mut self,
        id: NodeId,
        inputs: &[ValueId],
        shapes: &[Vec<usize>],
        expr: KExpr,
    ) -> Result<(), LowerError> {
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        for &v in inputs {
            self.f32_only(id, v)?;
        }
        let os = self.shape(out)?;
        let spec = ElementwiseSpec::new(&os, shapes, expr);
        let helpers = spec.needs_helpers();
        let srcs = inputs.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let name = self.g.node(id).name.clone();
        let op = self.g.node(id).op.name().to_string();
        self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, &op, 0);
        // Element i of an operand of the output's shape is read only for output element i.
        for (src, shape) in srcs.iter().zip(shapes) {
            if *shape == os {
                self.allow_in_place(*src, dst);
            }
        }
        Ok(())
    }

    /// The layout of an epilogue operand over the (rows = channels or m, cols = spatial or n)
    /// of a linear op's output, when it can be read that way.
    fn operand_mat(&self, v: ValueId, out: &[usize], conv: bool, groups: usize) -> Result<Option<Mat>, LowerError> {
        let s = self.shape(v)?;
        let st = broadcast_strides(&s, out);
        if conv {
            // out [N, C, H, W...]: rows = channels of one group, cols = spatial (flattened).
            let (n, c) = (out[0], out[1]);
            let sp_strides = &st[2..];
            // Size-1 dims have stride 0 after broadcasting: they do not decide the layout.
            let row_major =
                sp_strides.iter().zip(contiguous(&out[2..])).zip(&out[2..]).all(|((&s, k), &d)| d == 1 || s == k);
            let cs = if sp_strides.iter().all(|&x| x == 0) {
                0
            } else if row_major {
                1
            } else {
                return Ok(None);
            };
            // GEMM batch b = image * groups + g must land on image * st[0] + g * mg * st[1]. The
            // strides come from broadcasting, where a dim of size 1 has stride 0 whatever its
            // layout (one output channel: st[1] = 0), so st[0] is not always C * st[1].
            let group_stride = (c / groups) as isize * st[1];
            let (batch_stride, batch_mod) = if n == 1 {
                (group_stride, 0)
            } else if groups == 1 {
                (st[0], 0)
            } else if st[0] == 0 {
                (group_stride, groups)
            } else if st[0] == c as isize * st[1] {
                (group_stride, 0)
            } else {
                return Ok(None);
            };
            Ok(Some(Mat { rs: st[1], cs, panel_stride: 0, batch_stride, batch_mod }))
        } else {
            let r = out.len();
            if r != 2 {
                return Ok(None);
            }
            let cs = st[1];
            if cs != 0 && cs != 1 {
                return Ok(None);
            }
            Ok(Some(Mat { rs: st[0], cs, panel_stride: 0, batch_stride: 0, batch_mod: 0 }))
        }
    }

    /// A Conv/ConvTranspose/Gemm/MatMul whose own operands are the node's first `base_inputs`
    /// inputs, followed by its epilogue's operands.
    fn linear(&mut self, id: NodeId, base: &Op, base_inputs: usize, steps: &[Step]) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        let os = self.shape(out)?;
        let name = node.name.clone();
        let inputs: Vec<Option<ValueId>> = node.inputs().to_vec();
        let own = &inputs[..base_inputs.min(inputs.len())];
        let conv = matches!(base, Op::Conv(_));
        let groups = match base {
            Op::Conv(c) => c.group,
            _ => 1,
        };
        let path = match base {
            Op::Conv(c) => Some(self.conv_path(id, c, own)?),
            _ => None,
        };
        // Epilogue operands that the kernel can read directly; otherwise the epilogue runs as a
        // separate elementwise kernel afterwards.
        let mut adds = vec![];
        let mut fusable = true;
        for s in steps {
            if let Step::Add { operand } = s {
                let v = inputs
                    .get(*operand)
                    .copied()
                    .flatten()
                    .ok_or_else(|| self.unsupported(id, "a missing epilogue operand"))?;
                let layout = match path {
                    Some(ConvPath::Depthwise | ConvPath::Winograd(_)) => self.plane_add(v, &os)?.map(AddLayout::Plane),
                    _ => self.operand_mat(v, &os, conv, groups)?.map(AddLayout::Gemm),
                };
                match layout {
                    Some(l) => adds.push((v, l)),
                    None => fusable = false,
                }
            }
        }
        // A transposed conv's output is a gather of GEMM columns, which has no epilogue of its own.
        let fusable = fusable && !matches!(base, Op::ConvTranspose(_));
        let (own_steps, after): (Vec<Step>, Vec<Step>) =
            if fusable { (steps.to_vec(), vec![]) } else { (vec![], steps.to_vec()) };
        let dst = self.define(out)?;
        match base {
            Op::Conv(c) => {
                let path = path.unwrap_or(ConvPath::Gemm);
                self.conv(id, c, path, own, &own_steps, &adds, dst)?
            }
            Op::ConvTranspose(c) => self.conv_transpose(id, c, own, dst)?,
            Op::Gemm(gm) => self.gemm(id, gm.alpha, gm.beta, gm.trans_a, gm.trans_b, own, &own_steps, &adds, dst)?,
            Op::MatMul(_) => self.gemm(id, 1.0, 1.0, false, false, own, &own_steps, &adds, dst)?,
            other => return Err(self.unsupported(id, format!("{} with an epilogue", other.name()))),
        }
        if !after.is_empty() {
            // y = epilogue(y): one more elementwise pass over the output.
            let mut expr = KExpr::In(0);
            let mut ins = vec![out];
            let mut shapes = vec![os.clone()];
            for s in &after {
                expr = match s {
                    Step::Add { operand } => {
                        let v = inputs[*operand].ok_or_else(|| self.unsupported(id, "a missing epilogue operand"))?;
                        ins.push(v);
                        shapes.push(self.shape(v)?);
                        KExpr::bin(Bin::Ir(Binary::Add), expr, KExpr::In(ins.len() - 1))
                    }
                    Step::Act(a) => KExpr::act(a.clone(), expr),
                };
            }
            let spec = ElementwiseSpec::new(&os, &shapes, expr);
            let helpers = spec.needs_helpers();
            let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, "Epilogue", 0);
        }
        Ok(())
    }

    /// The GEMM epilogue of `steps`, its operands and whether it calls helpers.
    fn gemm_steps(&self, steps: &[Step], adds: &[(ValueId, AddLayout)]) -> (Vec<GemmStep>, Vec<ValueId>, bool) {
        let mut out = vec![];
        let mut vals = vec![];
        let mut k = 0;
        let mut helpers = false;
        for s in steps {
            match s {
                Step::Add { .. } => {
                    let (v, l) = adds[k];
                    k += 1;
                    // Only Gemm layouts reach the GEMM path (see `linear`).
                    if let AddLayout::Gemm(m) = l {
                        out.push(GemmStep::Add(m));
                        vals.push(v);
                    }
                }
                Step::Act(a) => {
                    helpers |= act_needs_helpers(a);
                    out.push(GemmStep::Act(a.clone()));
                }
            }
        }
        (out, vals, helpers)
    }

    /// The epilogue of `steps` for the plane kernels (depthwise, Winograd output), its operands
    /// and whether it calls helpers.
    fn plane_steps(&self, steps: &[Step], adds: &[(ValueId, AddLayout)]) -> (Vec<DwStep>, Vec<ValueId>, bool) {
        let mut out = vec![];
        let mut vals = vec![];
        let mut k = 0;
        let mut helpers = false;
        for s in steps {
            match s {
                Step::Add { .. } => {
                    let (v, l) = adds[k];
                    k += 1;
                    if let AddLayout::Plane(per_channel) = l {
                        out.push(DwStep::Add { per_channel });
                        vals.push(v);
                    }
                }
                Step::Act(a) => {
                    helpers |= act_needs_helpers(a);
                    out.push(DwStep::Act(a.clone()));
                }
            }
        }
        (out, vals, helpers)
    }

    /// Which kernels compute a conv, from its geometry alone (never from its epilogue).
    fn conv_path(
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
        if constant && let Some(tile) = winograd_tile(&geom, g, cin_total / g, cout / g, n, xs.len(), self.winograd) {
            return Ok(ConvPath::Winograd(tile));
        }
        Ok(ConvPath::Gemm)
    }

    /// How the plane kernels (depthwise, Winograd output) can read an epilogue operand over an
    /// output [N, C, H, W]: one value per channel (`Some(true)`), or the output's own layout
    /// (`Some(false)`); anything else (per position, per image, scalar) they cannot.
    fn plane_add(&self, v: ValueId, out: &[usize]) -> Result<Option<bool>, LowerError> {
        let s = self.shape(v)?;
        let st = broadcast_strides(&s, out);
        let (n, c) = (out[0], out[1]);
        let hw: usize = out[2..].iter().product();
        // Size-1 dims have stride 0 after broadcasting: they do not decide the layout.
        let along = |d: usize, want: isize| out[d] == 1 || st[d] == want;
        let spatial_zero = (2..out.len()).all(|d| along(d, 0));
        let spatial_row_major =
            st[2..].iter().zip(contiguous(&out[2..])).zip(&out[2..]).all(|((&s, k), &d)| d == 1 || s == k);
        if spatial_zero && along(1, 1) && along(0, 0) {
            return Ok(Some(true));
        }
        if spatial_row_major && along(1, hw as isize) && along(0, (c * hw) as isize) {
            return Ok(Some(false));
        }
        let _ = n;
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
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
        // 3-D convs take the general path (volumetric im2col + GEMM); `geom` is the 2-D view.
        let vol = (xs.len() == 5).then(|| vol_geom(&c.window, &xs, &os));
        let geom = if vol.is_some() { geom(&c.window, &xs[..4], &os[..4]) } else { geom(&c.window, &xs, &os) };
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
                };
                let row = (self.tier == Tier::Avx512).then(|| spec.wide_row()).flatten();
                spec.wide = row.is_some();
                let tiles = spec.tiles();
                // Operands: X, W, Y, bias, adds: Y comes third.
                let mut ops = vec![src, wref, dst];
                ops.extend(bias_ref);
                for v in add_vals {
                    ops.push(self.value(v)?);
                }
                self.step_ordered(Arc::new(spec), tiles, &ops, 2, helpers, &name, "DepthwiseConv", flops);
                if let Some(row) = row {
                    let k = self.kernel(Arc::new(row));
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
        let mr = self.tier.panel_rows(mg);
        let (a_ref, a) = match &w {
            // A: the weights of each group, [mg] x [k] row-major.
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
                match self.tier {
                    Tier::F32x4 => (src, a),
                    Tier::Avx2 | Tier::Avx512 => self.pack_a_at_run_time(&name, src, a, g, mg, k, mr),
                }
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
            && mg <= DIRECT_MAX_CHANNELS
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
        let mr = self.tier.panel_rows(positions);
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

    /// The epilogue operands of a conv as plane-kernel layouts, or None if one has no such form.
    fn plane_adds(
        &self,
        adds: &[(ValueId, AddLayout)],
        out: &[usize],
    ) -> Result<Option<Vec<(ValueId, AddLayout)>>, LowerError> {
        let mut plane = vec![];
        for &(v, _) in adds {
            match self.plane_add(v, out)? {
                Some(per_channel) => plane.push((v, AddLayout::Plane(per_channel))),
                None => return Ok(None),
            }
        }
        Ok(Some(plane))
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
        let a = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: (pm * k * mr) as isize,
            batch_mod: 0,
        };
        let b_ref = self.pack_b(name, cout, k, nr, |kk, co| w[co * k + kk]);
        let b = Mat { rs: nr as isize, cs: 1, panel_stride: (k * nr) as isize, batch_stride: 0, batch_mod: 0 };
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

    /// Constant GEMM B matrices (`k` x `cols`, element `at(k, col)`) packed once into `nr`-column
    /// panels `[panel][k][nr]`; columns past `cols` stay zero.
    fn pack_b(
        &mut self,
        name: &str,
        cols: usize,
        k: usize,
        nr: usize,
        at: impl Fn(usize, usize) -> f32 + Sync,
    ) -> BufRef {
        let panel = k * nr;
        self.weight_f32_with(cols.div_ceil(nr) * panel, &format!("{name}/packed_weights"), |packed| {
            packed.par_chunks_mut(panel.max(1)).enumerate().for_each(|(j, dst)| {
                for col in j * nr..((j + 1) * nr).min(cols) {
                    for kk in 0..k {
                        dst[kk * nr + col - j * nr] = at(kk, col);
                    }
                }
            });
        })
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

    /// A GEMM A computed at run time (`batches` matrices of `m` x `k`, read through `a`) copied
    /// into `mr`-row panels `[batch][panel][k][mr]` by copy steps; the `Mat` that reads them keeps
    /// `a`'s batch modulus.
    #[allow(clippy::too_many_arguments)]
    fn pack_a_at_run_time(
        &mut self,
        name: &str,
        a_ref: BufRef,
        a: Mat,
        batches: usize,
        m: usize,
        k: usize,
        mr: usize,
    ) -> (BufRef, Mat) {
        let (pm, full, rem) = (m.div_ceil(mr), m / mr, m % mr);
        let per = pm * k * mr;
        let scratch = self.scratch(batches * per * 4, &format!("{name}/packed_a"));
        let (rs, cs, bs) = (a.rs, a.cs, a.batch_stride);
        if full > 0 {
            let spec = CopySpec::new(
                &[batches, full, k, mr],
                vec![bs, mr as isize * rs, cs, rs],
                vec![per as isize, (k * mr) as isize, mr as isize, 1],
                0,
                0,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[a_ref], &[scratch], false, name, "PackA", 0);
        }
        if rem > 0 {
            // The last panel's missing rows stay as the arena left them: the microkernels never
            // store those rows, so their values do not matter.
            let spec = CopySpec::new(
                &[batches, k, rem],
                vec![bs, cs, rs],
                vec![per as isize, mr as isize, 1],
                (full * mr) as isize * rs,
                (full * k * mr) as isize,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[a_ref], &[scratch], false, name, "PackA", 0);
        }
        let packed = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: if batches > 1 { per as isize } else { 0 },
            batch_mod: a.batch_mod,
        };
        (scratch, packed)
    }

    /// Constant GEMM A matrices (one per group, `rows` x `k`, element `at(group, row, k)`) packed
    /// once into MR-row panels `[group][panel][k][mr]`, and the `Mat` that reads them.
    fn pack_a(
        &mut self,
        name: &str,
        groups: usize,
        rows: usize,
        k: usize,
        mr: usize,
        at: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> (BufRef, Mat) {
        let pm = rows.div_ceil(mr);
        let panel = k * mr;
        // Straight into the weights, one panel per task; rows past `rows` stay zero.
        let r = self.weight_f32_with(groups * pm * panel, &format!("{name}/packed_weights"), |packed| {
            packed.par_chunks_mut(panel.max(1)).enumerate().for_each(|(p, dst)| {
                let (gi, m0) = (p / pm, (p % pm) * mr);
                for m in m0..(m0 + mr).min(rows) {
                    for kk in 0..k {
                        dst[kk * mr + m - m0] = at(gi, m, kk);
                    }
                }
            });
        });
        let mat = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: (pm * k * mr) as isize,
            batch_mod: groups,
        };
        (r, mat)
    }

    /// A 3x3 stride-1 conv by Winograd F(2x2, 3x3) or F(4x4, 3x3) (`wg.tile`): input transform
    /// (for F(4x4, 3x3) from a zero-padded copy of the input), 16 or 36 GEMMs as one batch,
    /// output transform with bias and epilogue (see `kernels::winograd`, `kernels::winograd4`).
    #[allow(clippy::too_many_arguments)]
    fn winograd(
        &mut self,
        name: &str,
        src: BufRef,
        w: &[f32],
        bias: Option<BufRef>,
        wg: &WinoGeom,
        cg: usize,
        mg: usize,
        steps: Vec<DwStep>,
        adds: &[BufRef],
        helpers: bool,
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let (n, f4) = (wg.n, wg.tile == 4);
        let es = if f4 { winograd4::E } else { 16 };
        // Transformed weights U[e] (mg x cg each) in MR-row panels, one GEMM batch (group) per e.
        let mr = self.tier.panel_rows(mg);
        let (a_ref, a) = if f4 {
            let u: Vec<[f32; winograd4::E]> =
                (0..mg * cg).into_par_iter().map(|mc| winograd4::transform_kernel(&w[mc * 9..][..9])).collect();
            self.pack_a(name, es, mg, cg, mr, |e, m, c| u[m * cg + c][e])
        } else {
            let u: Vec<[f32; 16]> =
                (0..mg * cg).into_par_iter().map(|mc| transform_kernel(&w[mc * 9..][..9])).collect();
            self.pack_a(name, es, mg, cg, mr, |e, m, c| u[m * cg + c][e])
        };
        // A big map is transformed, multiplied and transformed back a band of tile rows at a
        // time, through band-sized buffers that stay in cache between the three steps.
        let per_row = n * wg.tw() * es * (cg + mg) * 4;
        let band_rows = if per_row * wg.th() > self.band_bytes {
            even_bands(wg.th(), (self.band_bytes / per_row).max(min_band_rows(wg.tw(), nr, 4)))
        } else {
            wg.th()
        };
        let banded = band_rows < wg.th();
        let band_tiles = |ty0: usize| band_rows.min(wg.th() - ty0) * wg.tw();
        // F(4x4, 3x3) reads zero-padded planes. F(2x2, 3x3) checks borders itself, element by
        // element, unless they are a large share of the map: then it too reads padded planes,
        // as an input without pads (ResNet50's 256-channel convs on 14x14, 24 of 49 tiles on
        // the border: their input transforms 0.31-0.39 -> 0.15 ms, plus 0.02 ms of padding).
        let padded = f4 || wg.border_share() > WINO2_PAD_BORDER_SHARE;
        let (src, in_geom) = if padded {
            let pad = WinoPadSpec { g: wg.clone(), c: cg };
            let buf = self.scratch(pad.bytes(), &format!("{name}/winograd_padded"));
            let tiles = pad.tiles();
            self.step(Arc::new(pad), tiles, &[src], &[buf], false, name, "WinogradPad", 0);
            let (hp, wp) = winograd4::padded_dims(wg);
            (buf, WinoGeom { h: hp, w: wp, ph: 0, pw: 0, ..wg.clone() })
        } else {
            (src, wg.clone())
        };
        // The AVX-512 tier transforms groups of sixteen tiles in machine code (F(2x2, 3x3)).
        let wide = self.tier == Tier::Avx512 && !f4;
        let v_bytes = if f4 {
            Wino4InputSpec { g: wg.clone(), c: cg, nr, band_tiles: banded.then(|| band_tiles(0)) }.bytes()
        } else {
            WinoInputSpec { g: in_geom.clone(), c: cg, nr, band_tiles: banded.then(|| band_tiles(0)), wide }.bytes()
        };
        let v = self.scratch(v_bytes, &format!("{name}/winograd_input"));
        // The F(4x4, 3x3) output transform reads a few floats past M's end (lanes it drops).
        let m_stride = |tiles: usize| mg * tiles + E_SKEW / 4;
        let m_bytes = (n * es * m_stride(band_tiles(0)) + winograd4::M_OVERREAD) * 4;
        let mbuf = self.scratch(m_bytes, &format!("{name}/winograd_products"));
        for ty0 in (0..wg.th()).step_by(band_rows) {
            let tiles = band_tiles(ty0);
            let es_bytes = if f4 {
                let input = Wino4InputSpec { g: wg.clone(), c: cg, nr, band_tiles: banded.then_some(tiles) };
                let table: Vec<u8> = input.table(ty0 * wg.tw()).iter().flat_map(|v| v.to_le_bytes()).collect();
                let table = self.weight(&table, &format!("{name}/winograd_tiles"));
                let (input_tiles, es_bytes) = (input.tiles(), input.e_stride());
                self.step(Arc::new(input), input_tiles, &[src, table], &[v], false, name, "WinogradInput", 0);
                es_bytes
            } else {
                let input = WinoInputSpec { g: in_geom.clone(), c: cg, nr, band_tiles: banded.then_some(tiles), wide };
                let table: Vec<u8> = input.table(ty0 * wg.tw()).iter().flat_map(|v| v.to_le_bytes()).collect();
                let table = self.weight(&table, &format!("{name}/winograd_tiles"));
                let (input_tiles, es_bytes) = (input.tiles(), input.e_stride());
                let kernel = wide.then(|| input.wide_kernel());
                self.step(Arc::new(input), input_tiles, &[src, table], &[v], false, name, "WinogradInput", 0);
                if let Some(k) = kernel {
                    let k = self.kernel(Arc::new(k));
                    if let Some(step) = self.out.steps.last_mut() {
                        step.operands.push(super::LOperand::Kernel(k));
                    }
                }
                es_bytes
            };
            let spec = GemmSpec {
                m: mg,
                n: tiles,
                k: cg,
                batch: n * es,
                a,
                b: Mat {
                    rs: nr as isize,
                    cs: 1,
                    panel_stride: (cg * nr) as isize,
                    batch_stride: (es_bytes / 4) as isize,
                    batch_mod: 0,
                },
                // Skewed by a line per matrix, like V (see `WinoInputSpec::e_stride`).
                c: Mat::row_major(tiles, m_stride(tiles)),
                mr,
                ..self.gemm_blocking()
            };
            let spec = balanced(spec);
            let (flops, tiles_g) = (spec.flops(), spec.tiles());
            let spec = Arc::new(spec);
            self.step_ordered(spec.clone(), tiles_g, &[a_ref, v, mbuf], 2, false, name, "Conv", flops);
            self.attach_microkernels(&spec);
            // The output and the residuals laid out like it start at the band's first row.
            let last = ty0 + band_rows >= wg.th();
            let band = banded.then_some((band_rows.min(wg.th() - ty0), last));
            let shift = |r: BufRef| BufRef { offset: r.offset + wg.tile * ty0 * wg.ow * 4, ..r };
            let mut ops = vec![mbuf, shift(dst)];
            ops.extend(bias);
            let plane_adds = steps.iter().filter_map(|s| match s {
                DwStep::Add { per_channel } => Some(!per_channel),
                _ => None,
            });
            ops.extend(plane_adds.zip(adds).map(|(plane, &r)| if plane { shift(r) } else { r }));
            let out = WinoOutputSpec { g: wg.clone(), m: mg, bias: bias.is_some(), steps: steps.clone(), band };
            self.step_ordered(Arc::new(out), n * mg, &ops, 1, helpers, name, "WinogradOutput", 0);
        }
        Ok(())
    }

    /// ConvTranspose as a GEMM that gives every input pixel's contribution to each kernel tap
    /// (`cols = W^T X` per image and group), then a gather of those columns into the output.
    fn conv_transpose(
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
                match self.tier {
                    Tier::F32x4 => (src, a),
                    Tier::Avx2 | Tier::Avx512 => self.pack_a_at_run_time(&name, src, a, g, gm, gk, mr),
                }
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

    /// Gemm and MatMul: `Y = alpha * A' B' + beta * C`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        id: NodeId,
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        inputs: &[Option<ValueId>],
        steps: &[Step],
        mats: &[(ValueId, AddLayout)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let name = self.g.node(id).name.clone();
        let (Some(av), Some(bv)) = (inputs[0], inputs.get(1).copied().flatten()) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        self.f32_only(id, av)?;
        self.f32_only(id, bv)?;
        let (as_, bs) = (self.shape(av)?, self.shape(bv)?);
        // MatMul's 1-D operands are a row (A) or a column (B); leading dims are batches, which
        // for A alone fold into M.
        let a2: Vec<usize> = if as_.len() == 1 { vec![1, as_[0]] } else { as_.clone() };
        let b2: Vec<usize> = if bs.len() == 1 { vec![bs[0], 1] } else { bs.clone() };
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let n = if trans_b { b2[0] } else { b2[b2.len() - 1] };
        // With batches in B: the output's batch dims, and B's matrix offsets (elements) along
        // them (0 where B broadcasts); an A that broadcasts along some of them but not all is
        // first expanded to them (`a_expand`: its matrix offsets).
        let mut batch_dims: Vec<usize> = vec![];
        let mut b_strides: Vec<isize> = vec![];
        let mut a_expand: Option<Vec<isize>> = None;
        let b_batch: usize = bb.iter().product();
        let (m, k, nb, a_stride) = if b_batch == 1 {
            if trans_a {
                (a2[1], a2[0], 1, 0)
            } else {
                (ab.iter().product::<usize>() * a2[a2.len() - 2], a2[a2.len() - 1], 1, 0)
            }
        } else {
            let rank = ab.len().max(bb.len());
            let pad = |d: &[usize]| -> Vec<usize> {
                std::iter::repeat_n(1, rank - d.len()).chain(d.iter().copied()).collect()
            };
            let (pa, pb) = (pad(ab), pad(bb));
            let ob: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
            let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
            b_strides = broadcast_strides(&pb, &ob).iter().map(|&s| s * (k * n) as isize).collect();
            let a_stride = if pa == ob || pa.iter().product::<usize>() == 1 {
                if pa == ob { m * k } else { 0 }
            } else {
                a_expand = Some(broadcast_strides(&pa, &ob).iter().map(|&s| s * (m * k) as isize).collect());
                m * k
            };
            batch_dims = ob;
            (m, k, batch_dims.iter().product::<usize>(), a_stride)
        };
        // Distinct packed B matrices: one per output batch when B has batches.
        let b_count = if b_batch > 1 { nb } else { 1 };
        let (mut a_ref, a_const) = match &a_expand {
            None => (self.value(av)?, self.is_konst(av)),
            Some(strides) => {
                let src = self.value(av)?;
                let scratch = self.scratch(nb * m * k * 4, &format!("{name}/expanded_a"));
                let mut dims = batch_dims.clone();
                dims.extend([m, k]);
                let mut ins = strides.clone();
                ins.extend([k as isize, 1]);
                let spec = CopySpec::new(&dims, ins, contiguous(&dims), 0, 0, 4);
                let tiles = spec.tiles();
                self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "ExpandA", 0);
                (scratch, false)
            }
        };
        let a = if trans_a {
            Mat { rs: 1, cs: m as isize, panel_stride: 0, batch_stride: 0, batch_mod: 0 }
        } else {
            Mat { rs: k as isize, cs: 1, panel_stride: 0, batch_stride: a_stride as isize, batch_mod: 0 }
        };
        let pn = n.div_ceil(nr);
        let panel = pn * k * nr;
        let b = Mat {
            rs: nr as isize,
            cs: 1,
            panel_stride: (k * nr) as isize,
            batch_stride: if b_count > 1 { panel as isize } else { 0 },
            batch_mod: 0,
        };
        // Output batch bi reads B's matrix at this element offset.
        let b_offset = |bi: usize| -> usize {
            let (mut rest, mut off) = (bi, 0isize);
            for (d, &st) in batch_dims.iter().zip(&b_strides).rev() {
                off += (rest % d) as isize * st;
                rest /= d;
            }
            off as usize
        };
        let b_ref = match self.konst(bv) {
            Some(t) => {
                let w = t.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?;
                let mut packed = vec![0f32; b_count * panel];
                for bi in 0..b_count {
                    let w = &w[b_offset(bi)..];
                    for kk in 0..k {
                        for j in 0..n {
                            packed[bi * panel + (j / nr) * k * nr + kk * nr + j % nr] =
                                if trans_b { w[j * k + kk] } else { w[kk * n + j] };
                        }
                    }
                }
                self.weight_f32(&packed, &format!("{name}/packed_weights"))
            }
            None => {
                // Copy into whole nr-wide panels at run time, one set per output batch.
                let src = self.value(bv)?;
                let scratch = self.scratch(b_count * panel * 4, &format!("{name}/packed_b"));
                let (ks, ns) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
                let (bsi, bso): (Vec<isize>, Vec<isize>) = if b_count > 1 {
                    (b_strides.clone(), contiguous(&batch_dims).iter().map(|&s| s * panel as isize).collect())
                } else {
                    (vec![0], vec![0])
                };
                let bdims = if b_count > 1 { batch_dims.clone() } else { vec![1] };
                let with =
                    |lead: &[isize], rest: &[isize]| -> Vec<isize> { lead.iter().chain(rest).copied().collect() };
                // P[b][j][kk][c] = B_b(kk, j*nr + c): copy panels of full width, then the tail.
                let full = n / nr;
                if full > 0 {
                    let mut dims = bdims.clone();
                    dims.extend([full, k, nr]);
                    let spec = CopySpec::new(
                        &dims,
                        with(&bsi, &[nr as isize * ns, ks, ns]),
                        with(&bso, &[(k * nr) as isize, nr as isize, 1]),
                        0,
                        0,
                        4,
                    );
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "PackB", 0);
                }
                if n % nr != 0 {
                    let mut dims = bdims.clone();
                    dims.extend([k, n % nr]);
                    let spec = CopySpec::new(
                        &dims,
                        with(&bsi, &[ks, ns]),
                        with(&bso, &[nr as isize, 1]),
                        (full * nr) as isize * ns,
                        (full * k * nr) as isize,
                        4,
                    );
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "PackB", 0);
                }
                scratch
            }
        };
        let out2 = [m, n];
        let mut bias_ref = None;
        let mut bias = None;
        if let Some(cv) = inputs.get(2).copied().flatten() {
            let cs = self.shape(cv)?;
            let st = broadcast_strides(&cs, &out2);
            if st[1] != 0 && st[1] != 1 {
                return Err(self.unsupported(id, "this Gemm C layout"));
            }
            let r = match self.konst(cv) {
                Some(t) if beta != 1.0 => {
                    let v: Vec<f32> = t
                        .view::<f32>()
                        .map_err(|e| self.unsupported(id, e.to_string()))?
                        .iter()
                        .map(|x| x * beta)
                        .collect();
                    self.weight_f32(&v, &format!("{name}/bias"))
                }
                _ if beta != 1.0 => {
                    // beta * C computed at run time, then added like a constant bias.
                    let src = self.value(cv)?;
                    let scaled = self.scratch((cs.iter().product::<usize>() * 4).max(4), &format!("{name}/beta_c"));
                    let e = KExpr::bin(Bin::Ir(Binary::Mul), KExpr::In(0), KExpr::Const(beta));
                    let spec = ElementwiseSpec::new(&cs, std::slice::from_ref(&cs), e);
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scaled], false, &name, "ScaleC", 0);
                    scaled
                }
                _ => self.value(cv)?,
            };
            bias_ref = Some(r);
            bias = Some(Mat { rs: st[0], cs: st[1], panel_stride: 0, batch_stride: 0, batch_mod: 0 });
        }
        let (gsteps, add_vals, helpers) = self.gemm_steps(steps, mats);
        let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let mr = self.tier.panel_rows(m);
        let mut a = Mat { panel_stride: if trans_a { mr as isize } else { (mr * k) as isize }, ..a };
        // A computed at run time is packed into mr-row panels first (read in place, a tile's rows
        // are k floats apart and, for k a multiple of 1024, all land in one L1 set); the AVX2
        // microkernel reads nothing but packed panels.
        if (mr > 1 && !a_const) || self.tier.is_wide() {
            let a_batches = if a.batch_stride == 0 { 1 } else { nb };
            (a_ref, a) = self.pack_a_at_run_time(&name, a_ref, a, a_batches, m, k, mr);
        }
        let spec = GemmSpec {
            m,
            n,
            k,
            batch: nb,
            a,
            b,
            c: Mat::row_major(n, m * n),
            alpha,
            bias,
            steps: gsteps,
            mr,
            ..self.gemm_blocking()
        };
        let spec = balanced(spec);
        let flops = spec.flops();
        let tiles = spec.tiles();
        let mut ops = vec![a_ref, b_ref, dst];
        ops.extend(bias_ref);
        ops.extend(add_refs.iter().copied());
        let spec = Arc::new(spec);
        self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, &name, self.g.node(id).op.name(), flops);
        self.attach_microkernels(&spec);
        self.gemm_in_place(&spec, &add_refs, dst);
        Ok(())
    }

    /// The GEMM's blocking for this tier, with every other field empty (complete with `..`).
    fn gemm_blocking(&self) -> GemmSpec {
        match self.tier {
            Tier::F32x4 => GemmSpec::blocked(KC, M_PANELS, N_PANELS),
            // BLIS-style: a 256-deep K block keeps a 16-wide B panel (16 KB) in L1 while 16
            // six-row A panels (96 KB) stay in L2 for the 16 B panels of the tile, so each A
            // block is loaded once per 256 columns (1024^3 on one core: 41.5 -> 29 ms against
            // 4 B panels per tile).
            Tier::Avx2 => GemmSpec { tier: Tier::Avx2, ..GemmSpec::blocked(256, 16, 16) },
            // A 32-wide B panel 256 deep is 32 KB of the 48 KB L1 of recent Intel cores; 16
            // twelve-row A panels (192 KB) stay in L2 across the tile's 8 B panels (1024^3 on one
            // core: 8 x 2 panels 22.9 ms, 8 x 8 15.9, 16 x 8 15.4, 24 x 16 16.4).
            Tier::Avx512 => GemmSpec { tier: Tier::Avx512, ..GemmSpec::blocked(256, 16, 8) },
        }
    }

    /// The AVX2 GEMM just stepped calls its microkernels: their entries follow its operands.
    fn attach_microkernels(&mut self, spec: &GemmSpec) {
        if !spec.tier.is_wide() {
            return;
        }
        debug_assert!(spec.a.rs == 1 && spec.a.cs == spec.mr as isize, "a wide GEMM reads packed A panels");
        let kernels: Vec<usize> = spec.wide_kernels().into_iter().map(|k| self.kernel(Arc::new(k))).collect();
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(kernels.into_iter().map(super::LOperand::Kernel));
        }
    }

    /// A GEMM whose K fits one block computes each output tile in one pass, reading an `Add`
    /// operand only for the element it then writes: an operand laid out like C may share C's
    /// memory.
    fn gemm_in_place(&mut self, spec: &GemmSpec, adds: &[BufRef], dst: BufRef) {
        if spec.k > spec.kc {
            return;
        }
        let mats = spec.steps.iter().filter_map(|s| match s {
            GemmStep::Add(m) => Some(*m),
            _ => None,
        });
        for (m, &r) in mats.zip(adds) {
            if m == spec.c {
                self.allow_in_place(r, dst);
            }
        }
    }

    /// A step whose operand `out_index` is the one it writes (the others it reads).
    #[allow(clippy::too_many_arguments)]
    fn step_ordered(
        &mut self,
        spec: Arc<dyn crate::codegen::KernelSpec>,
        tiles: usize,
        ops: &[BufRef],
        out_index: usize,
        helpers: bool,
        node: &str,
        op: &str,
        flops: u64,
    ) {
        let kernel = self.kernel(spec);
        let mut operands: Vec<super::LOperand> = ops.iter().map(|&r| super::LOperand::Buf(r)).collect();
        if helpers {
            operands.push(super::LOperand::Helpers);
        }
        let reads = ops.iter().enumerate().filter(|(i, _)| *i != out_index).map(|(_, r)| r.buf).collect();
        self.out.steps.push(super::LStep {
            kernel,
            operands,
            tiles,
            name: node.to_string(),
            op: op.to_string(),
            flops,
            reads,
            writes: vec![ops[out_index].buf],
            in_place: vec![],
            check: None,
        });
    }

    /// f64 MatMul: scalar loops with the reference's order of operations (see `F64MatMulSpec`).
    fn matmul_f64(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let (Some(av), Some(bv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let (as_, bs) = (self.shape(av)?, self.shape(bv)?);
        // 1-D operands are a row (A) or a column (B).
        let a2: Vec<usize> = if as_.len() == 1 { vec![1, as_[0]] } else { as_.clone() };
        let b2: Vec<usize> = if bs.len() == 1 { vec![bs[0], 1] } else { bs.clone() };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = incept_ir::ops::binary::broadcast_dims(ab, bb).map_err(|e| self.unsupported(id, e.to_string()))?;
        let scaled = |st: Vec<isize>, size: usize| st.into_iter().map(|s| s * size as isize).collect::<Vec<_>>();
        let spec = F64MatMulSpec {
            m,
            k,
            n,
            a_strides: scaled(broadcast_strides(ab, &batch), m * k),
            b_strides: scaled(broadcast_strides(bb, &batch), k * n),
            batch,
        };
        let (a, b) = (self.value(av)?, self.value(bv)?);
        let dst = self.define(ValueId::new(id, 0))?;
        let tiles = spec.tiles();
        let flops = 2 * (tiles * n * k) as u64;
        self.step(Arc::new(spec), tiles, &[a, b], &[dst], false, &name, "MatMul", flops);
        Ok(())
    }

    /// The byte width of indices read at run time (i32 or i64).
    fn index_bytes(&self, id: NodeId, iv: ValueId) -> Result<usize, LowerError> {
        match self.g.ty(iv).dtype {
            DType::I64 => Ok(8),
            DType::I32 => Ok(4),
            other => Err(self.unsupported(id, format!("{other} indices"))),
        }
    }

    /// A step whose kernel reads indices at run time and sets the status word when one is out
    /// of range (its operands: `reads`, then `dst` and the status word); the run then fails with
    /// `what`, naming the node.
    #[allow(clippy::too_many_arguments)]
    fn checked_index_step(
        &mut self,
        spec: Arc<dyn crate::codegen::KernelSpec>,
        tiles: usize,
        reads: &[BufRef],
        dst: BufRef,
        name: &str,
        op: &str,
        what: String,
    ) {
        let status = self.status();
        self.step(spec, tiles, reads, &[dst, status], false, name, op, 0);
        if let Some(step) = self.out.steps.last_mut() {
            step.check = Some(what);
        }
    }

    /// Gather with indices computed at run time: a copy per output row, checked (see
    /// `GatherSpec`).
    fn gather_runtime(&mut self, id: NodeId, x: ValueId, iv: ValueId, axis: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let index_bytes = self.index_bytes(id, iv)?;
        let s = self.shape(x)?;
        let count: usize = self.shape(iv)?.iter().product();
        let out = ValueId::new(id, 0);
        let spec = GatherSpec {
            outer: s[..axis].iter().product(),
            axis: s[axis],
            inner: s[axis + 1..].iter().product(),
            count,
            elem: self.g.ty(out).dtype.size(),
            index_bytes,
        };
        if spec.axis == 0 {
            return Err(self.unsupported(id, "gathering from an empty axis"));
        }
        let (src, idx) = (self.value(x)?, self.value(iv)?);
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let what = format!("an index is outside [-{0}, {0})", s[axis]);
        self.checked_index_step(Arc::new(spec), tiles, &[src, idx], dst, &name, "Gather", what);
        Ok(())
    }

    /// Integer and f64 arithmetic, and Pow with an integer operand (see `TypedElementwiseSpec`).
    fn typed_elementwise(&mut self, id: NodeId, dtype: DType) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let ins: Vec<ValueId> = node.input_values().collect();
        let op = match &node.op {
            // Clip: the lower bound, then the upper (absent bounds skipped).
            Op::Clip(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let (mut inputs, mut ops) = (vec![x], vec![]);
                for (i, op) in [(1, TypedOp::AtLeast), (2, TypedOp::AtMost)] {
                    if let Some(b) = self.in_val(id, i) {
                        inputs.push(b);
                        ops.push(op);
                    }
                }
                return self.typed_chain(id, dtype, &inputs, ops);
            }
            Op::Binary(Binary::Add) | Op::Variadic(Variadic::Sum) => TypedOp::Add,
            Op::Binary(Binary::Sub) => TypedOp::Sub,
            Op::Binary(Binary::Mul) => TypedOp::Mul,
            Op::Binary(Binary::Div) => TypedOp::Div,
            Op::Variadic(Variadic::Max) => TypedOp::Max,
            Op::Variadic(Variadic::Min) => TypedOp::Min,
            Op::Binary(Binary::Pow) => TypedOp::Pow,
            other => {
                return Err(
                    self.unsupported(id, format!("{} on {dtype} data (the JIT computes it in f32 only)", other.name()))
                );
            }
        };
        self.typed_chain(id, dtype, &ins, vec![op; ins.len() - 1])
    }

    /// `ops[k]` applied in turn to the running value and input k + 1, all of one dtype.
    fn typed_chain(&mut self, id: NodeId, dtype: DType, ins: &[ValueId], ops: Vec<TypedOp>) -> Result<(), LowerError> {
        use DType::*;
        let name = self.g.node(id).name.clone();
        let numeric = |d: DType| matches!(d, F32 | F64 | I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64);
        let dtypes: Vec<DType> = ins.iter().map(|&v| self.g.ty(v).dtype).collect();
        // f32 comes here only as Pow's base with an integer exponent.
        let pow = ops.contains(&TypedOp::Pow);
        if !numeric(dtype) || (dtype == F32 && !pow) {
            return Err(self.unsupported(id, format!("{dtype} arithmetic")));
        }
        for (k, &d) in dtypes.iter().enumerate() {
            // Pow's exponent may have any numeric type; everything else shares the output's.
            let exponent = k > 0 && ops[k - 1] == TypedOp::Pow;
            if d != dtype && !(exponent && numeric(d)) {
                return Err(self.unsupported(id, format!("mixed {d} and {dtype} operands")));
            }
        }
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let r = os.len();
        let (lead, cols) = if r == 0 { (vec![], 1) } else { (os[..r - 1].to_vec(), os[r - 1]) };
        let (mut row_strides, mut col_strides) = (vec![], vec![]);
        for &v in ins {
            let st = broadcast_strides(&self.shape(v)?, &os);
            row_strides.push(st[..r.saturating_sub(1)].iter().map(|&x| x as usize).collect());
            col_strides.push(if r == 0 { 0 } else { st[r - 1] as usize });
        }
        let spec = TypedElementwiseSpec { dtype, dtypes, ops, lead, cols, row_strides, col_strides };
        let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let helpers = spec.needs_helpers();
        let op_name = self.g.node(id).op.name().to_string();
        self.step(Arc::new(spec), tiles, &srcs, &[dst], helpers, &name, &op_name, 0);
        Ok(())
    }

    /// MaxPool with its Indices output, any rank, as a volumetric pool (leading dims of 1).
    fn max_pool_with_indices(&mut self, id: NodeId, p: &incept_ir::ops::Pool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let (out, ind) = (ValueId::new(id, 0), ValueId::new(id, 1));
        let (xs, os) = (self.shape(x)?, self.shape(out)?);
        let nsp = xs.len() - 2;
        if !(1..=3).contains(&nsp) {
            return Err(self.unsupported(id, format!("{nsp}-D pooling")));
        }
        // Spatial attributes padded in front to three dims.
        let lead = 3 - nsp;
        let pad3 = |v: &[usize], fill: usize| -> [usize; 3] {
            let mut a = [fill; 3];
            a[lead..].copy_from_slice(&v[..nsp]);
            a
        };
        let w = &p.window;
        let v = VolGeom {
            dims: pad3(&xs[2..], 1),
            kernel: pad3(&w.kernel, 1),
            strides: pad3(&w.strides, 1),
            pads: pad3(&w.pads[..nsp], 0),
            dilations: pad3(&w.dilations, 1),
            out: pad3(&os[2..], 1),
        };
        let ends = pad3(&w.pads[nsp..], 0);
        let spec = VolPoolSpec { max: true, v, ends, count_include_pad: false, indices: Some(p.column_major_indices) };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let idx = self.define(ind)?;
        self.step(Arc::new(spec), xs[0] * xs[1], &[src], &[dst, idx], false, &name, "MaxPool", 0);
        Ok(())
    }

    fn pool(&mut self, id: NodeId, max: bool, w: &Window, count_include_pad: bool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let out = ValueId::new(id, 0);
        let (xs, os) = (self.shape(x)?, self.shape(out)?);
        if xs.len() == 5 {
            let v = vol_geom(w, &xs, &os);
            let ends = [w.pads[3], w.pads[4], w.pads[5]];
            let spec = VolPoolSpec { max, v, ends, count_include_pad, indices: None };
            let src = self.value(x)?;
            let dst = self.define(out)?;
            self.step(Arc::new(spec), xs[0] * xs[1], &[src], &[dst], false, &name, self.g.node(id).op.name(), 0);
            return Ok(());
        }
        if xs.len() != 4 && xs.len() != 3 {
            return Err(self.unsupported(id, format!("{}-D pooling", xs.len().saturating_sub(2))));
        }
        let geom = geom(w, &xs, &os);
        let nsp = xs.len() - 2;
        let (pb, pr) = if nsp == 2 { (w.pads[2], w.pads[3]) } else { (0, w.pads[1]) };
        let spec = PoolSpec { max, planes: xs[0] * xs[1], g: geom, pb, pr, count_include_pad };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let tiles = spec.planes;
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, self.g.node(id).op.name(), 0);
        Ok(())
    }

    fn slice(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let s = self.shape(x)?;
        let out = ValueId::new(id, 0);
        let os = self.shape(out)?;
        let ints = |i: usize| -> Result<Option<Vec<i64>>, LowerError> {
            match self.in_val(id, i) {
                None => Ok(None),
                Some(v) => match self.konst(v) {
                    Some(t) => Ok(Some(t.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?)),
                    None => Err(self.unsupported(id, "slice bounds computed at run time")),
                },
            }
        };
        let (starts, axes, steps) = (ints(1)?.unwrap_or_default(), ints(3)?, ints(4)?);
        let istr = contiguous(&s);
        let mut strides = istr.clone();
        let mut offset = 0isize;
        for (i, &st) in starts.iter().enumerate() {
            let ax = axes.as_ref().map_or(i as i64, |a| a[i]);
            let ax = if ax < 0 { ax + s.len() as i64 } else { ax } as usize;
            let step = steps.as_ref().map_or(1, |v| v[i]);
            let d = s[ax] as i64;
            let st = if st < 0 { st.saturating_add(d) } else { st };
            let st = if step > 0 { st.clamp(0, d) } else { st.clamp(0, d - 1) };
            offset += st as isize * istr[ax];
            strides[ax] = istr[ax] * step as isize;
        }
        let src = self.value(x)?;
        self.strided_copy(out, src, &os, strides, offset, &name, "Slice")
    }

    fn pad(&mut self, id: NodeId, op: &incept_ir::ops::pad::Pad) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        let (s, os) = (self.shape(x)?, self.shape(out)?);
        let ints = |i: usize, what: &str| -> Result<Option<Vec<i64>>, LowerError> {
            match self.in_val(id, i) {
                None => Ok(None),
                Some(v) => match self.konst(v) {
                    Some(t) => t.to_i64s().map(Some).map_err(|e| self.unsupported(id, e.to_string())),
                    None => Err(self.unsupported(id, format!("{what} computed at run time"))),
                },
            }
        };
        let pads = ints(1, "pads")?.ok_or_else(|| self.unsupported(id, "a missing pads input"))?;
        let axes = ints(3, "axes")?;
        let pads = incept_ir::ops::pad::Pad::full_pads(s.len(), &pads, axes.as_deref())
            .map_err(|e| self.unsupported(id, e.to_string()))?;
        // The fill: a constant, or a scalar computed at run time (broadcast by the fill kernel).
        let value = match self.in_val(id, 2) {
            Some(v) => match self.konst(v) {
                Some(t) => {
                    Ok(t.to_f64s().map_err(|e| self.unsupported(id, e.to_string()))?.first().copied().unwrap_or(0.0)
                        as f32)
                }
                None if self.shape(v)?.iter().product::<usize>() == 1 => {
                    self.f32_only(id, v)?;
                    Err(v)
                }
                None => return Err(self.unsupported(id, "a pad value with more than one element")),
            },
            None => Ok(0.0),
        };
        if op.mode == incept_ir::ops::pad::PadMode::Constant {
            return self.constant_pad(id, x, &s, &os, &pads, value);
        }
        // Reflect, edge and wrap are separable: one single-tap resampling pass per padded axis.
        let passes: Vec<usize> = (0..s.len()).filter(|&a| pads[a] != (0, 0)).collect();
        let mut cur = self.value(x)?;
        if passes.is_empty() {
            self.values.insert(out, cur);
            return Ok(());
        }
        if s.contains(&0) {
            return Err(self.unsupported(id, format!("{:?} padding of an empty tensor", op.mode)));
        }
        let mut shape = s.clone();
        for (k, &axis) in passes.iter().enumerate() {
            let inner: usize = shape[axis + 1..].iter().product();
            let (mut offs, mut wts) = (vec![], vec![]);
            for j in 0..os[axis] {
                let i = op.source(s[axis], pads[axis].0, j).unwrap_or(0);
                offs.extend_from_slice(&((i * inner * 4) as i64).to_le_bytes());
                wts.push(1.0f32);
            }
            let outer: usize = shape[..axis].iter().product();
            let offs = self.weight(&offs, &format!("{name}.taps{k}"));
            let wts = self.weight_f32(&wts, &format!("{name}.weights{k}"));
            // -0.0 keeps the sign of zeros: x * 1 + -0 == x for every x.
            let bias = self.weight_f32(&vec![-0.0; os[axis]], &format!("{name}.bias{k}"));
            shape[axis] = os[axis];
            let dst = if k + 1 == passes.len() {
                self.define(out)?
            } else {
                let bytes = shape.iter().product::<usize>() * 4;
                self.scratch(bytes.max(4), &format!("{name}.pass{k}"))
            };
            let spec = ResampleSpec { outer, d_in: s[axis], d_out: os[axis], inner, taps: 1 };
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[cur, offs, wts, bias], &[dst], false, &name, "Pad", 0);
            cur = dst;
        }
        Ok(())
    }

    /// Constant padding: fill, then copy the input (cropped where pads are negative) into place.
    fn constant_pad(
        &mut self,
        id: NodeId,
        x: ValueId,
        s: &[usize],
        os: &[usize],
        pads: &[(i64, i64)],
        value: Result<f32, ValueId>,
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let dst = self.define(out)?;
        let (fill, reads) = match value {
            Ok(c) => (ElementwiseSpec::new(os, &[], KExpr::Const(c)), vec![]),
            Err(v) => (ElementwiseSpec::new(os, &[self.shape(v)?], KExpr::In(0)), vec![self.value(v)?]),
        };
        let tiles = fill.tiles();
        self.step(Arc::new(fill), tiles, &reads, &[dst], false, &name, "PadFill", 0);
        let ostr = contiguous(os);
        let istr = contiguous(s);
        let mut dims = vec![];
        let (mut in_off, mut out_off) = (0isize, 0isize);
        for (d, &(b, e)) in pads.iter().enumerate() {
            let keep = s[d] as i64 + b.min(0) + e.min(0);
            dims.push(keep.max(0) as usize);
            in_off += (-b).max(0) as isize * istr[d];
            out_off += b.max(0) as isize * ostr[d];
        }
        if dims.iter().all(|&d| d > 0) {
            let src = self.value(x)?;
            let spec = CopySpec::new(&dims, istr, ostr, in_off, out_off, 4);
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Pad", 0);
        }
        Ok(())
    }
}

/// The 3-D geometry of a window op on [N, C, D, H, W].
fn vol_geom(w: &Window, xs: &[usize], os: &[usize]) -> VolGeom {
    VolGeom {
        dims: [xs[2], xs[3], xs[4]],
        kernel: [w.kernel[0], w.kernel[1], w.kernel[2]],
        strides: [w.strides[0], w.strides[1], w.strides[2]],
        pads: [w.pads[0], w.pads[1], w.pads[2]],
        dilations: [w.dilations[0], w.dilations[1], w.dilations[2]],
        out: [os[2], os[3], os[4]],
    }
}

/// 2-D geometry of a window op (1-D ops become 2-D with height 1).
fn geom(w: &Window, xs: &[usize], os: &[usize]) -> Geom {
    if xs.len() == 3 {
        return Geom {
            h: 1,
            w: xs[2],
            kh: 1,
            kw: w.kernel[0],
            sh: 1,
            sw: w.strides[0],
            ph: 0,
            pw: w.pads[0],
            dh: 1,
            dw: w.dilations[0],
            oh: 1,
            ow: os[2],
        };
    }
    Geom {
        h: xs[2],
        w: xs[3],
        kh: w.kernel[0],
        kw: w.kernel[1],
        sh: w.strides[0],
        sw: w.strides[1],
        ph: w.pads[0],
        pw: w.pads[1],
        dh: w.dilations[0],
        dw: w.dilations[1],
        oh: os[2],
        ow: os[3],
    }
}

/// The epilogue of a conv that Winograd F(2x2, 3x3) computes, or `None` when it does not apply:
/// 3x3, stride 1, no dilation, one group, 2-D, enough channels for the transforms to pay (8 in
/// and out), and epilogue operands laid out like the output or one value per channel.
/// Fewest step tiles a GEMM should have: with two threads, a GEMM of two unequal tiles (289
/// columns in tiles of 256 and 33, InceptionV3's 17x17 maps) leaves one thread idle most of the
/// time; eight keep the imbalance under one tile in eight.
const MIN_GEMM_TILES: usize = 8;

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

/// The fewest rows (of outputs, or of Winograd tiles) a band holds: `panels` panels of
/// columns. Narrower GEMMs lose more to their edges than the cache saves (InceptionV3's 80 ->
/// 192 channel Winograd conv on 73x73 in bands of one row of 37 tiles: 11.6 -> 14.0 ms).
fn min_band_rows(row_len: usize, nr: usize, panels: usize) -> usize {
    (panels * nr).div_ceil(row_len.max(1))
}

/// Rows per band that cut `rows` into as many bands as `most` rows per band would, but evenly:
/// no short last band (14 rows by at most 10: 7 + 7, not 10 + 4).
fn even_bands(rows: usize, most: usize) -> usize {
    rows.div_ceil(rows.div_ceil(most.max(1)))
}

/// Shrinks a GEMM's tiles (columns first, then rows) until it has [`MIN_GEMM_TILES`] or cannot
/// be split further. Only who computes which tile changes, not any sum, so the bits are the same.
fn balanced(mut spec: GemmSpec) -> GemmSpec {
    while spec.tiles() < MIN_GEMM_TILES && (spec.n_panels > 1 || spec.m_panels > 1) {
        if spec.n_panels > 1 {
            spec.n_panels = spec.n_panels.div_ceil(2);
        } else {
            spec.m_panels = spec.m_panels.div_ceil(2);
        }
    }
    spec
}

/// Which Winograd tile computes a conv (2: F(2x2, 3x3), 4: F(4x4, 3x3)), or None for the
/// im2col GEMM. `choice.forced` (the test knob) overrides every choice but the conv's shape;
/// `INCEPT_WINOGRAD=0|2|4` in the environment (for measuring) overrides the cost model's pick
/// among the tiles, where Winograd pays at all; F(4x4, 3x3) is the cost model's pick only with
/// `choice.f4`.
fn winograd_tile(
    geom: &Geom,
    groups: usize,
    cg: usize,
    mg: usize,
    n: usize,
    rank: usize,
    choice: super::WinogradChoice,
) -> Option<usize> {
    let forced = choice.forced;
    let env = std::env::var("INCEPT_WINOGRAD").ok().and_then(|v| v.parse::<usize>().ok());
    if std::env::var_os("INCEPT_NO_WINOGRAD").is_some() || env == Some(0) {
        return None;
    }
    let square3 = geom.kh == 3 && geom.kw == 3 && geom.sh == 1 && geom.sw == 1 && geom.dh == 1 && geom.dw == 1;
    if !square3 || groups != 1 || rank != 4 || cg < 8 || mg < 8 || geom.oh < 2 || geom.ow < 2 {
        return None;
    }
    let wg = |tile| WinoGeom { tile, n, h: geom.h, w: geom.w, ph: geom.ph, pw: geom.pw, oh: geom.oh, ow: geom.ow };
    // Kernels address the transformed matrices with 32-bit displacements; the widest panels
    // (32, AVX-512) bound every tier's layout.
    let fits = |tile: usize| {
        let g = wg(tile);
        let limit = i32::MAX as usize / ((tile + 2) * (tile + 2));
        g.panels(32) * cg * 32 * 4 < limit && mg * (g.tiles() + 4) * 4 < limit
    };
    if let Some(tile @ (2 | 4)) = forced {
        return fits(tile).then_some(tile);
    }
    let f2 = wg(2);
    // Few tiles (a 7x7 map has 16) and weights far beyond L2: each transformed weight, 16/9 the
    // bytes of the 3x3 ones, serves only that many columns, and the GEMMs wait on memory.
    // ResNet50's 512-channel 7x7 convs took the same time either way (4.2 ms, one thread) and
    // their Winograd weights cost 16 MB each.
    if f2.tiles() * n < 32 && 16 * cg * mg * 4 > 1 << 20 {
        return None;
    }
    if let Some(tile @ (2 | 4)) = env {
        return fits(tile).then_some(tile);
    }
    if choice.f4 && fits(4) && f4_pays(&f2, &wg(4), cg, mg) {
        return Some(4);
    }
    fits(2).then_some(2)
}

/// Whether F(4x4, 3x3) beats F(2x2, 3x3) on a conv, by a cost model of both (see `winograd_cost`).
fn f4_pays(f2: &WinoGeom, f4: &WinoGeom, cg: usize, mg: usize) -> bool {
    winograd_cost(f4, cg, mg) < winograd_cost(f2, cg, mg)
}

/// Estimated time of a Winograd conv (arbitrary units): the GEMMs' multiply-adds, their
/// transformed weights streamed from memory where they do not stay in L2, and the transforms'
/// memory traffic (the input transform writes `es` values per tile and channel, the output
/// transform reads as many per output channel).
fn winograd_cost(g: &WinoGeom, cg: usize, mg: usize) -> f64 {
    let es = ((g.tile + 2) * (g.tile + 2)) as f64;
    let tiles = (g.n * g.tiles()) as f64;
    let (cg, mg) = (cg as f64, mg as f64);
    let macs = es * tiles * cg * mg;
    let weights = es * cg * mg * 4.0;
    let streamed = if weights > (1 << 20) as f64 { weights } else { 0.0 };
    let transforms = es * tiles * (cg + mg) * 4.0;
    macs / WINO_MACS_PER_UNIT + streamed / WINO_STREAM_BYTES_PER_UNIT + transforms / WINO_TRANSFORM_BYTES_PER_UNIT
}

/// Above this share of border tiles, F(2x2, 3x3) reads a zero-padded copy of its input.
const WINO2_PAD_BORDER_SHARE: f64 = 0.25;

/// The cost model's rates (per nanosecond, one AVX-512 core of the reference machine).
const WINO_MACS_PER_UNIT: f64 = 70.0;
const WINO_STREAM_BYTES_PER_UNIT: f64 = 20.0;
const WINO_TRANSFORM_BYTES_PER_UNIT: f64 = 20.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn same3x3(hw: usize) -> Geom {
        Geom { h: hw, w: hw, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1, oh: hw, ow: hw }
    }

    /// The cost model's picks on the zoo's 3x3 conv shapes match what six-conv chains of each
    /// measured (one thread, AVX-512 VM; mins of 20 runs, ms for F(2x2, 3x3) / F(4x4, 3x3)):
    /// F(4x4, 3x3) where it was faster, F(2x2, 3x3) where it was not, nothing where neither
    /// beat the im2col GEMM.
    #[test]
    fn winograd_tile_follows_the_measurements() {
        let cases = [
            // (channels in, out, map side, the tile, measured)
            (64, 64, 56, Some(4), "8.38 / 5.15"),
            (128, 128, 28, Some(4), "7.17 / 4.05"),
            (64, 64, 28, Some(4), "2.57 / 1.34"),
            (256, 256, 28, Some(4), "15.86 / 13.05 (4 convs)"),
            (64, 96, 35, Some(4), "4.85 / 2.88"),
            (96, 96, 35, Some(4), "6.64 / 3.95"),
            (32, 64, 147, Some(4), "11.05 / 8.62 (2 convs)"),
            (80, 192, 73, Some(4), "14.35 / 9.43 (2 convs)"),
            (192, 192, 17, Some(4), "5.77 / 4.42"),
            (256, 256, 14, Some(2), "6.98 / 7.31"),
            (384, 384, 8, None, "im2col 7.06, 8.33 / 15.23"),
            (512, 512, 7, None, "ResNet50's layer 4"),
        ];
        let f4 = crate::lower::WinogradChoice { forced: None, f4: true };
        let forced4 = crate::lower::WinogradChoice { forced: Some(4), f4: false };
        for (c, m, hw, want, measured) in cases {
            let got = winograd_tile(&same3x3(hw), 1, c, m, 1, 4, f4);
            assert_eq!(got, want, "{c} -> {m} on {hw}x{hw} (measured {measured})");
            // Without f4 the model never picks F(4x4, 3x3), and keeps Winograd where it paid.
            let default = winograd_tile(&same3x3(hw), 1, c, m, 1, 4, crate::lower::WinogradChoice::default());
            assert_eq!(default, want.map(|_| 2), "{c} -> {m} on {hw}x{hw} without f4");
        }
        // The test knob overrides the model; shapes Winograd cannot take stay declined.
        assert_eq!(winograd_tile(&same3x3(7), 1, 512, 512, 1, 4, forced4), Some(4));
        let strided = Geom { sh: 2, sw: 2, oh: 14, ow: 14, ..same3x3(28) };
        assert_eq!(winograd_tile(&strided, 1, 64, 64, 1, 4, forced4), None);
    }
}
