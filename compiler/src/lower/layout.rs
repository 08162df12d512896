//! Ops that move data without arithmetic: views (Reshape and kin), Concat (in place where its
//! inputs can be written into their slices), Split, Transpose, Expand, Tile, Slice,
//! DepthToSpace/SpaceToDepth, Pad.

use std::sync::Arc;

use incept_ir::DType;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::Op;

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::math::KExpr;
use crate::codegen::kernels::nd::{broadcast_strides, contiguous};
use crate::codegen::kernels::resample::ResampleSpec;

impl<'g> Lowerer<'g> {
    /// Reshape-like ops: the same bytes under another shape. Dropout at inference keeps
    /// everything: its mask is a constant of all true.
    pub(super) fn view(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let r = self.value(x)?;
        self.values.insert(out, r);
        if node.outputs.len() > 1 {
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

    /// Concats whose inputs' slices are contiguous in the output (every dim before the axis is
    /// 1, as at batch 1): each input that a kernel computes gets its slice as its buffer, so the
    /// concat itself copies nothing. Consumers come before producers so nested concats nest.
    pub(super) fn place_concat_inputs(&mut self, order: &[NodeId]) -> Result<(), LowerError> {
        for &id in order.iter().rev() {
            let node = self.g.node(id);
            let Op::Concat(c) = &node.op else { continue };
            let out = ValueId::new(id, 0);
            let s = self.shape(out)?;
            let axis = c.axis as usize;
            let elem = self.g.ty(out).dtype.size();
            let dst = match self.placed.get(&out) {
                Some(&r) => r,
                None => {
                    let bytes = s.iter().product::<usize>() * elem;
                    let r = self.scratch(bytes.max(4), &self.g.value(out).name.clone());
                    self.placed.insert(out, r);
                    r
                }
            };
            if s[..axis].iter().product::<usize>() != 1 {
                continue;
            }
            let inner: usize = s[axis + 1..].iter().product();
            let mut at = 0;
            for v in node.input_values() {
                let is = self.shape(v)?;
                let producer = &self.g.node(v.node).op;
                let computed = !matches!(
                    producer,
                    Op::Input(_)
                        | Op::Const(_)
                        | Op::Reshape(_)
                        | Op::Flatten(_)
                        | Op::Squeeze(_)
                        | Op::Unsqueeze(_)
                        | Op::Identity(_)
                        | Op::Dropout(_)
                        | Op::Cast(_)
                );
                if computed && !self.placed.contains_key(&v) && !self.g.outputs().contains(&v) {
                    self.placed.insert(v, BufRef { buf: dst.buf, offset: dst.offset + at * inner * elem });
                }
                at += is[axis];
            }
        }
        Ok(())
    }

    /// Concat: a copy of each input into its slice of the output, except inputs whose producers
    /// already wrote them there (see `place_concat_inputs`).
    pub(super) fn concat(&mut self, id: NodeId, axis: usize) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        let s = self.shape(out)?;
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
            let spec = CopySpec::new(&is, contiguous(&is), ostr.clone(), 0, (at * ostr[axis] as usize) as isize, elem);
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Concat", 0);
            at += is[axis];
        }
        Ok(())
    }

    /// Split: a strided copy per output.
    pub(super) fn split(&mut self, id: NodeId, axis: usize) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let s = self.shape(x)?;
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

    /// Transpose: a strided copy.
    pub(super) fn transpose(&mut self, id: NodeId, perm: &[usize]) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let s = self.shape(x)?;
        let istr = contiguous(&s);
        let dims: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
        let src = self.value(x)?;
        self.strided_copy(ValueId::new(id, 0), src, &dims, strides, 0, &name, "Transpose")
    }

    /// Expand: a copy that reads broadcast dims with stride 0.
    pub(super) fn expand(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (s, o) = (self.shape(x)?, self.shape(out)?);
        let src = self.value(x)?;
        self.strided_copy(out, src, &o, broadcast_strides(&s, &o), 0, &name, "Expand")
    }

    /// Tile: a strided copy of the output as [repeat, dim] pairs, each repeat's input stride 0.
    pub(super) fn tile(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (s, o) = (self.shape(x)?, self.shape(out)?);
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

    pub(super) fn slice(&mut self, id: NodeId) -> Result<(), LowerError> {
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

    /// DepthToSpace: output [n, cb, h, b, w, b] read from the input viewed as 6-D.
    pub(super) fn depth_to_space(&mut self, id: NodeId, d: &incept_ir::ops::DepthToSpace) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let s = self.shape(x)?;
        let (n, c, h, w, b) = (s[0], s[1], s[2], s[3], d.blocksize);
        let cb = c / (b * b);
        let (split, perm): (Vec<usize>, [usize; 6]) = if d.crd {
            (vec![n, cb, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, cb, h, w], [0, 3, 4, 1, 5, 2])
        };
        let istr = contiguous(&split);
        let dims: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
        let src = self.value(x)?;
        self.strided_copy(ValueId::new(id, 0), src, &dims, strides, 0, &name, "DepthToSpace")
    }

    /// SpaceToDepth: the inverse permutation of the input viewed as 6-D.
    pub(super) fn space_to_depth(&mut self, id: NodeId, blocksize: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let s = self.shape(x)?;
        let (n, c, h, w, b) = (s[0], s[1], s[2], s[3], blocksize);
        let split = vec![n, c, h / b, b, w / b, b];
        let perm = [0, 3, 5, 1, 2, 4];
        let istr = contiguous(&split);
        let dims: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| istr[p]).collect();
        let src = self.value(x)?;
        self.strided_copy(ValueId::new(id, 0), src, &dims, strides, 0, &name, "SpaceToDepth")
    }

    pub(super) fn pad(&mut self, id: NodeId, op: &incept_ir::ops::pad::Pad) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let out = ValueId::new(id, 0);
        let dtype = self.g.ty(out).dtype;
        if dtype != DType::F32 && !(dtype.is_int() && op.mode == incept_ir::ops::pad::PadMode::Constant) {
            self.f32_only(id, out)?;
        }
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
                None if dtype != DType::F32 => {
                    return Err(self.unsupported(id, "an integer pad value computed at run time"));
                }
                None if self.shape(v)?.iter().product::<usize>() == 1 => {
                    self.f32_only(id, v)?;
                    Err(v)
                }
                None => return Err(self.unsupported(id, "a pad value with more than one element")),
            },
            None => Ok(0.0),
        };
        if dtype != DType::F32 {
            return self.integer_pad(id, x, &s, &os, &pads);
        }
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
    /// Constant padding of integers (quantized tensors pad with their zero point): the value,
    /// which must be a constant, copied everywhere, then the input into its place.
    fn integer_pad(
        &mut self,
        id: NodeId,
        x: ValueId,
        s: &[usize],
        os: &[usize],
        pads: &[(i64, i64)],
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let size = self.g.ty(out).dtype.size();
        let value: Vec<u8> = match self.in_val(id, 2) {
            Some(v) => match self.konst(v) {
                Some(t) => t.bytes()[..size].to_vec(),
                None => return Err(self.unsupported(id, "an integer pad value computed at run time")),
            },
            None => vec![0; size],
        };
        let one = self.weight(&value, &format!("{name}.value"));
        let dst = self.define(out)?;
        let fill = CopySpec::new(os, vec![0; os.len()], contiguous(os), 0, 0, size);
        let tiles = fill.tiles();
        self.step(Arc::new(fill), tiles, &[one], &[dst], false, &name, "PadFill", 0);
        self.pad_copy(x, s, os, pads, dst, size, &name)
    }

    /// Copies the kept part of `x` into the padded output `dst` (negative pads crop).
    #[allow(clippy::too_many_arguments)]
    fn pad_copy(
        &mut self,
        x: ValueId,
        s: &[usize],
        os: &[usize],
        pads: &[(i64, i64)],
        dst: BufRef,
        size: usize,
        name: &str,
    ) -> Result<(), LowerError> {
        let (ostr, istr) = (contiguous(os), contiguous(s));
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
            let spec = CopySpec::new(&dims, istr, ostr, in_off, out_off, size);
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[dst], false, name, "Pad", 0);
        }
        Ok(())
    }

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
        self.pad_copy(x, s, os, pads, dst, 4, &name)
    }

    /// Copies `src` (read with `in_strides` over `dims`) into a new buffer for `v`.
    #[allow(clippy::too_many_arguments)]
    fn strided_copy(
        &mut self,
        v: ValueId,
        src: BufRef,
        dims: &[usize],
        in_strides: Vec<isize>,
        in_offset: isize,
        node: &str,
        op: &str,
    ) -> Result<(), LowerError> {
        let elem = self.g.ty(v).dtype.size();
        let dst = self.define(v)?;
        let spec = CopySpec::new(dims, in_strides, contiguous(dims), in_offset, 0, elem);
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, node, op, 0);
        Ok(())
    }
}
