//! Lowering of each op family to kernels.

use std::sync::Arc;

use incept_ir::DType;
use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::conv::Window;
use incept_ir::ops::{Activation, Binary, Op, PoolKind, Step, Unary, Variadic};

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::kernels::conv::{DepthwiseSpec, DwStep, Geom, Im2colSpec};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::gemm::{GemmSpec, GemmStep, Mat, NR};
use crate::codegen::kernels::math::{Bin, KExpr, act_needs_helpers};
use crate::codegen::kernels::nd::{broadcast_strides, contiguous};
use crate::codegen::kernels::pool::{GlobalPoolSpec, PoolSpec};
use crate::codegen::kernels::reduce::{ReduceSpec, SoftmaxSpec};

/// Rows of the GEMM register tile, the K block and the panels per tile.
const MR: usize = 12;
const KC: usize = 512;
const M_PANELS: usize = 8;
const N_PANELS: usize = 16;

impl Lowerer<'_> {
    fn unsupported(&self, id: NodeId, what: impl Into<String>) -> LowerError {
        let node = self.g.node(id);
        LowerError::Unsupported { node: node.name.clone(), op: node.op.name().to_string(), what: what.into() }
    }

    fn in_val(&self, id: NodeId, i: usize) -> Option<ValueId> {
        self.g.node(id).inputs().get(i).copied().flatten()
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
        match &node.op {
            // Views: same bytes, another shape.
            Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_) | Op::Identity(_) | Op::Dropout(_) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let r = self.value(x)?;
                self.values.insert(out, r);
                if node.outputs.len() > 1 {
                    return Err(self.unsupported(id, "Dropout's mask output"));
                }
                Ok(())
            }
            Op::Unary(_) | Op::Binary(_) | Op::Clip(_) | Op::Elementwise(_) | Op::Variadic(_) => self.elementwise(id),
            Op::Cast(c) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                if self.g.ty(x).dtype != c.to {
                    return Err(self.unsupported(id, format!("Cast from {} to {}", self.g.ty(x).dtype, c.to)));
                }
                let r = self.value(x)?;
                self.values.insert(out, r);
                Ok(())
            }
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul(_) => self.linear(id, &node.op.clone(), &[]),
            Op::Fused(f) => {
                let f = f.clone();
                self.linear(id, &f.base, &f.steps)
            }
            Op::Pool(p) => {
                if node.outputs.len() > 1 {
                    return Err(self.unsupported(id, "MaxPool's Indices output"));
                }
                let p = p.clone();
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
                self.f32_only(id, x)?;
                let s = self.shape(x)?;
                let axis = sm.axis as usize;
                let n: usize = s.iter().product();
                let (len, stride) = if sm.coerce_2d {
                    (s[axis..].iter().product(), 1)
                } else {
                    (s[axis], s[axis + 1..].iter().product())
                };
                let spec = SoftmaxSpec { groups: n / len.max(1), len, stride, log: sm.log };
                let src = self.value(x)?;
                let dst = self.define(out)?;
                self.step(Arc::new(spec.clone()), spec.groups, &[src], &[dst], true, &name, node.op.name(), 0);
                Ok(())
            }
            Op::Reduce(r) => {
                let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                self.f32_only(id, x)?;
                let s = self.shape(x)?;
                let axes: Vec<usize> = match self.in_val(id, 1).and_then(|a| self.g.const_value(a)) {
                    Some(t) => t
                        .to_i64s()
                        .map_err(|e| self.unsupported(id, e.to_string()))?
                        .iter()
                        .map(|&a| if a < 0 { (a + s.len() as i64) as usize } else { a as usize })
                        .collect(),
                    None if r.noop_with_empty_axes => vec![],
                    None => (0..s.len()).collect(),
                };
                let src = self.value(x)?;
                if axes.is_empty() {
                    self.values.insert(out, src);
                    return Ok(());
                }
                let (lo, hi) = (*axes.iter().min().unwrap_or(&0), *axes.iter().max().unwrap_or(&0));
                if hi - lo + 1 != axes.len() {
                    return Err(self.unsupported(id, "a reduction over non-adjacent axes"));
                }
                let len: usize = s[lo..=hi].iter().product();
                let inner: usize = s[hi + 1..].iter().product();
                let outputs = s.iter().product::<usize>() / len.max(1);
                let kind = match r.kind {
                    incept_ir::ops::ReduceKind::Sum => 0,
                    incept_ir::ops::ReduceKind::Mean => 1,
                    incept_ir::ops::ReduceKind::Max => 2,
                };
                let spec = ReduceSpec { outputs, len, inner, kind };
                let dst = self.define(out)?;
                self.step(Arc::new(spec), outputs, &[src], &[dst], false, &name, node.op.name(), 0);
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
                let Some(idx) = self.g.const_value(iv) else {
                    return Err(self.unsupported(id, "indices computed at run time"));
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
            Op::Pad(p) => self.pad(id, p.mode),
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
            other => Err(self.unsupported(id, format!("{} yet", other.name()))),
        }
    }

    /// Unary, binary, clip, variadic and fused elementwise ops.
    fn elementwise(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let ins: Vec<ValueId> = node.input_values().collect();
        let (expr, inputs): (KExpr, Vec<ValueId>) = match &node.op {
            Op::Unary(u) => (KExpr::act(Activation::Unary(u.clone()), KExpr::In(0)), vec![ins[0]]),
            Op::Binary(b) => (KExpr::bin(Bin::Ir(*b), KExpr::In(0), KExpr::In(1)), ins.clone()),
            Op::Clip(_) => {
                let bound = |i: usize| -> Result<Option<f32>, LowerError> {
                    match self.in_val(id, i) {
                        None => Ok(None),
                        Some(v) => match self.g.const_value(v) {
                            Some(t) => Ok(t.to_f64s().ok().and_then(|x| x.first().map(|&x| x as f32))),
                            None => Err(self.unsupported(id, "Clip bounds computed at run time")),
                        },
                    }
                };
                let (lo, hi) = (bound(1)?, bound(2)?);
                (KExpr::act(Activation::Clip { min: lo, max: hi }, KExpr::In(0)), vec![ins[0]])
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
            let sp: usize = out[2..].iter().product();
            let sp_strides = &st[2..];
            let cs = if sp_strides.iter().all(|&x| x == 0) {
                0
            } else if sp_strides == contiguous(&out[2..]).as_slice() {
                1
            } else {
                return Ok(None);
            };
            let mg = c / groups;
            if n > 1 && st[0] != 0 && st[0] != (c * sp) as isize {
                return Ok(None);
            }
            // Batch b = image * groups + g: offset = image * st[0] + g * mg * st[1].
            if st[0] == 0 && n > 1 {
                return Ok(Some(Mat {
                    rs: st[1],
                    cs,
                    panel_stride: 0,
                    batch_stride: (mg as isize) * st[1],
                    batch_mod: groups,
                }));
            }
            Ok(Some(Mat { rs: st[1], cs, panel_stride: 0, batch_stride: (mg as isize) * st[1], batch_mod: 0 }))
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

    /// Conv, Gemm and MatMul, with their fused epilogue.
    fn linear(&mut self, id: NodeId, base: &Op, steps: &[Step]) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        let os = self.shape(out)?;
        let name = node.name.clone();
        let inputs: Vec<Option<ValueId>> = node.inputs().to_vec();
        let conv = matches!(base, Op::Conv(_));
        let groups = match base {
            Op::Conv(c) => c.group,
            _ => 1,
        };
        // Epilogue operands that the kernel can read directly; otherwise the epilogue runs as a
        // separate elementwise kernel afterwards.
        let mut mats = vec![];
        let mut fusable = true;
        for s in steps {
            if let Step::Add { operand } = s {
                let v = inputs
                    .get(*operand)
                    .copied()
                    .flatten()
                    .ok_or_else(|| self.unsupported(id, "a missing epilogue operand"))?;
                match self.operand_mat(v, &os, conv, groups)? {
                    Some(m) => mats.push((v, m)),
                    None => fusable = false,
                }
            }
        }
        let (own_steps, after): (Vec<Step>, Vec<Step>) =
            if fusable { (steps.to_vec(), vec![]) } else { (vec![], steps.to_vec()) };
        let dst = self.define(out)?;
        match base {
            Op::Conv(c) => self.conv(id, c, &inputs, &own_steps, &mats, dst)?,
            Op::Gemm(gm) => {
                self.gemm(id, gm.alpha, gm.beta, gm.trans_a, gm.trans_b, &inputs, &own_steps, &mats, dst)?
            }
            Op::MatMul(_) => self.gemm(id, 1.0, 1.0, false, false, &inputs[..2], &own_steps, &mats, dst)?,
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

    fn gemm_steps(&self, steps: &[Step], mats: &[(ValueId, Mat)]) -> (Vec<GemmStep>, Vec<ValueId>, bool) {
        let mut out = vec![];
        let mut vals = vec![];
        let mut k = 0;
        let mut helpers = false;
        for s in steps {
            match s {
                Step::Add { .. } => {
                    out.push(GemmStep::Add(mats[k].1));
                    vals.push(mats[k].0);
                    k += 1;
                }
                Step::Act(a) => {
                    helpers |= act_needs_helpers(a);
                    out.push(GemmStep::Act(a.clone()));
                }
            }
        }
        (out, vals, helpers)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        id: NodeId,
        c: &incept_ir::ops::Conv,
        inputs: &[Option<ValueId>],
        steps: &[Step],
        mats: &[(ValueId, Mat)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = inputs[0].ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let wv = inputs.get(1).copied().flatten().ok_or_else(|| self.unsupported(id, "missing weights"))?;
        let Some(w) = self.g.const_value(wv) else { return Err(self.unsupported(id, "weights computed at run time")) };
        let w = w.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?.into_owned();
        let bias = match inputs.get(2).copied().flatten() {
            Some(b) => Some(
                self.g
                    .const_value(b)
                    .ok_or_else(|| self.unsupported(id, "a bias computed at run time"))?
                    .view::<f32>()
                    .map_err(|e| self.unsupported(id, e.to_string()))?
                    .into_owned(),
            ),
            None => None,
        };
        let xs = self.shape(x)?;
        let os = self.shape(ValueId::new(id, 0))?;
        if xs.len() == 5 || xs.len() < 3 {
            return Err(self.unsupported(id, format!("{}-D convolution", xs.len() - 2)));
        }
        let geom = geom(&c.window, &xs, &os);
        let (n, cin_total, cout) = (xs[0], xs[1], os[1]);
        let g = c.group;
        let (cg, mg) = (cin_total / g, cout / g);
        let src = self.value(x)?;
        let (gsteps, add_vals, helpers) = self.gemm_steps(steps, mats);
        let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let flops = 2 * (n * cout * geom.oh * geom.ow * cg * geom.kh * geom.kw) as u64;
        if g == cin_total && g > 1 {
            // Depthwise: direct kernel.
            let mult = cout / cin_total;
            let wref = self.weight_f32(&w, &format!("{name}/weights"));
            let mut reads = vec![src, wref];
            let bias_ref = bias.as_ref().map(|b| self.weight_f32(b, &format!("{name}/bias")));
            reads.extend(bias_ref);
            let mut dsteps = vec![];
            let mut ai = 0;
            for s in gsteps {
                match s {
                    GemmStep::Add(m) => {
                        let per_channel = m.cs == 0;
                        if !per_channel && m.rs != (geom.oh * geom.ow) as isize {
                            return Err(self.unsupported(id, "this epilogue operand layout"));
                        }
                        dsteps.push(DwStep::Add { per_channel });
                        reads.push(add_refs[ai]);
                        ai += 1;
                    }
                    GemmStep::Act(a) => dsteps.push(DwStep::Act(a)),
                }
            }
            let spec = DepthwiseSpec { n, c_in: cin_total, mult, g: geom, bias: bias.is_some(), steps: dsteps };
            let tiles = spec.tiles();
            // Operands: X, W, Y, bias, adds: Y comes third.
            let mut ops = vec![reads[0], reads[1]];
            let rest: Vec<BufRef> = reads[2..].to_vec();
            ops.push(dst);
            ops.extend(rest);
            self.step_ordered(Arc::new(spec), tiles, &ops, 2, helpers, &name, "Conv", flops);
            return Ok(());
        }
        // Dense or grouped: GEMM over im2col panels, one problem per (image, group).
        let k = cg * geom.kh * geom.kw;
        let hw_out = geom.oh * geom.ow;
        let mr = MR.min(mg).max(1);
        let pm = mg.div_ceil(mr);
        // A: weights of each group as MR-row panels [g][panel][k][mr].
        let mut packed = vec![0f32; g * pm * k * mr];
        for gi in 0..g {
            for m in 0..mg {
                for kk in 0..k {
                    packed[((gi * pm + m / mr) * k + kk) * mr + m % mr] = w[(gi * mg + m) * k + kk];
                }
            }
        }
        let a_ref = self.weight_f32(&packed, &format!("{name}/packed_weights"));
        let a = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: (pm * k * mr) as isize,
            batch_mod: g,
        };
        let direct = geom.kh == 1
            && geom.kw == 1
            && geom.sh == 1
            && geom.sw == 1
            && geom.ph == 0
            && geom.pw == 0
            && geom.oh == geom.h
            && geom.ow == geom.w
            && hw_out.is_multiple_of(NR);
        let (b_ref, b) = if direct {
            (
                src,
                Mat {
                    rs: hw_out as isize,
                    cs: 1,
                    panel_stride: NR as isize,
                    batch_stride: (cg * hw_out) as isize,
                    batch_mod: 0,
                },
            )
        } else {
            let im = Im2colSpec { batch: n * g, groups: g, c_total: cin_total, cin: cg, g: geom.clone() };
            let scratch = self.scratch(im.bytes(), &format!("{name}/im2col"));
            let tiles = im.tiles();
            let pn = im.panels();
            self.step(Arc::new(im), tiles, &[src], &[scratch], false, &name, "Im2col", 0);
            (
                scratch,
                Mat {
                    rs: NR as isize,
                    cs: 1,
                    panel_stride: (k * NR) as isize,
                    batch_stride: (pn * k * NR) as isize,
                    batch_mod: 0,
                },
            )
        };
        let bias_ref = bias.as_ref().map(|bv| self.weight_f32(bv, &format!("{name}/bias")));
        let spec = GemmSpec {
            m: mg,
            n: hw_out,
            k,
            batch: n * g,
            a,
            b,
            c: Mat { rs: hw_out as isize, cs: 1, panel_stride: 0, batch_stride: (mg * hw_out) as isize, batch_mod: 0 },
            alpha: 1.0,
            bias: bias_ref.map(|_| Mat { rs: 1, cs: 0, panel_stride: 0, batch_stride: mg as isize, batch_mod: g }),
            steps: gsteps,
            mr,
            kc: KC,
            m_panels: M_PANELS,
            n_panels: N_PANELS,
        };
        let tiles = spec.tiles();
        let mut ops = vec![a_ref, b_ref, dst];
        ops.extend(bias_ref);
        ops.extend(add_refs);
        self.step_ordered(Arc::new(spec), tiles, &ops, 2, helpers, &name, "Conv", flops);
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
        mats: &[(ValueId, Mat)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let (Some(av), Some(bv)) = (inputs[0], inputs.get(1).copied().flatten()) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        self.f32_only(id, av)?;
        let (as_, bs) = (self.shape(av)?, self.shape(bv)?);
        if (bs.len() != 2 || as_.len() < 2 && !trans_a) && !(as_.len() == 1 && bs.len() == 2) {
            return Err(self.unsupported(id, "batched matrix products with a batched right operand"));
        }
        // A as [M, K] (leading dims flattened into M).
        let (m, k) =
            if trans_a { (as_[1], as_[0]) } else { (as_[..as_.len() - 1].iter().product(), as_[as_.len() - 1]) };
        let n = if trans_b { bs[0] } else { bs[1] };
        let a_ref = self.value(av)?;
        let a = if trans_a {
            Mat { rs: 1, cs: m as isize, panel_stride: MR as isize, batch_stride: 0, batch_mod: 0 }
        } else {
            Mat { rs: k as isize, cs: 1, panel_stride: (MR * k) as isize, batch_stride: 0, batch_mod: 0 }
        };
        let pn = n.div_ceil(NR);
        let (b_ref, b) = match self.g.const_value(bv) {
            Some(t) => {
                let w = t.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?;
                let mut packed = vec![0f32; pn * k * NR];
                for kk in 0..k {
                    for j in 0..n {
                        packed[(j / NR) * k * NR + kk * NR + j % NR] =
                            if trans_b { w[j * k + kk] } else { w[kk * n + j] };
                    }
                }
                (
                    self.weight_f32(&packed, &format!("{name}/packed_weights")),
                    Mat { rs: NR as isize, cs: 1, panel_stride: (k * NR) as isize, batch_stride: 0, batch_mod: 0 },
                )
            }
            None => {
                // Copy into whole NR-wide panels at run time.
                let src = self.value(bv)?;
                let scratch = self.scratch(pn * k * NR * 4, &format!("{name}/packed_b"));
                let (ks, ns) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
                // P[j][kk][c] = B(kk, j*NR + c): copy panels of full width, then the tail.
                let full = n / NR;
                if full > 0 {
                    let spec = CopySpec::new(
                        &[full, k, NR],
                        vec![NR as isize * ns, ks, ns],
                        vec![(k * NR) as isize, NR as isize, 1],
                        0,
                        0,
                        4,
                    );
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "PackB", 0);
                }
                if n % NR != 0 {
                    let spec = CopySpec::new(
                        &[k, n % NR],
                        vec![ks, ns],
                        vec![NR as isize, 1],
                        (full * NR) as isize * ns,
                        (full * k * NR) as isize,
                        4,
                    );
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "PackB", 0);
                }
                (
                    scratch,
                    Mat { rs: NR as isize, cs: 1, panel_stride: (k * NR) as isize, batch_stride: 0, batch_mod: 0 },
                )
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
            let r = match self.g.const_value(cv) {
                Some(t) if beta != 1.0 => {
                    let v: Vec<f32> = t
                        .view::<f32>()
                        .map_err(|e| self.unsupported(id, e.to_string()))?
                        .iter()
                        .map(|x| x * beta)
                        .collect();
                    self.weight_f32(&v, &format!("{name}/bias"))
                }
                _ if beta != 1.0 => return Err(self.unsupported(id, "beta != 1 with a C computed at run time")),
                _ => self.value(cv)?,
            };
            bias_ref = Some(r);
            bias = Some(Mat { rs: st[0], cs: st[1], panel_stride: 0, batch_stride: 0, batch_mod: 0 });
        }
        let (gsteps, add_vals, helpers) = self.gemm_steps(steps, mats);
        let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let mr = MR.min(m).max(1);
        let spec = GemmSpec {
            m,
            n,
            k,
            batch: 1,
            a: Mat { panel_stride: if trans_a { mr as isize } else { (mr * k) as isize }, ..a },
            b,
            c: Mat::row_major(n, 0),
            alpha,
            bias,
            steps: gsteps,
            mr,
            kc: KC,
            m_panels: M_PANELS,
            n_panels: N_PANELS,
        };
        let flops = spec.flops();
        let tiles = spec.tiles();
        let mut ops = vec![a_ref, b_ref, dst];
        ops.extend(bias_ref);
        ops.extend(add_refs);
        self.step_ordered(Arc::new(spec), tiles, &ops, 2, helpers, &name, self.g.node(id).op.name(), flops);
        Ok(())
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
        });
    }

    fn pool(&mut self, id: NodeId, max: bool, w: &Window, count_include_pad: bool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let out = ValueId::new(id, 0);
        let (xs, os) = (self.shape(x)?, self.shape(out)?);
        if xs.len() != 4 && xs.len() != 3 {
            return Err(self.unsupported(id, format!("{}-D pooling", xs.len() - 2)));
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
                Some(v) => match self.g.const_value(v) {
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

    fn pad(&mut self, id: NodeId, mode: incept_ir::ops::pad::PadMode) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        if mode != incept_ir::ops::pad::PadMode::Constant {
            return Err(self.unsupported(id, "Pad modes other than constant yet"));
        }
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        let (s, os) = (self.shape(x)?, self.shape(out)?);
        let pads = match self.in_val(id, 1).and_then(|v| self.g.const_value(v)) {
            Some(t) => t.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?,
            None => return Err(self.unsupported(id, "pads computed at run time")),
        };
        if self.in_val(id, 3).is_some() {
            return Err(self.unsupported(id, "Pad with axes yet"));
        }
        let value = match self.in_val(id, 2) {
            Some(v) => self
                .g
                .const_value(v)
                .and_then(|t| t.to_f64s().ok())
                .and_then(|v| v.first().copied())
                .ok_or_else(|| self.unsupported(id, "a pad value computed at run time"))? as f32,
            None => 0.0,
        };
        let r = s.len();
        let dst = self.define(out)?;
        // Fill, then copy the input (cropped where pads are negative) into place.
        let fill = ElementwiseSpec::new(&os, &[], KExpr::Const(value));
        let tiles = fill.tiles();
        self.step(Arc::new(fill), tiles, &[], &[dst], false, &name, "PadFill", 0);
        let ostr = contiguous(&os);
        let istr = contiguous(&s);
        let mut dims = vec![];
        let (mut in_off, mut out_off) = (0isize, 0isize);
        for d in 0..r {
            let (b, e) = (pads[d], pads[r + d]);
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
