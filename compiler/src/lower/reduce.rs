//! Reductions over axes (Reduce*) and Softmax.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};

use super::{LowerError, Lowerer};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::nd::contiguous;
use crate::codegen::kernels::reduce::{ReduceSpec, SoftmaxSpec};

impl<'g> Lowerer<'g> {
    /// ReduceSum/Mean/Max/... over constant axes: one pass per run of adjacent axes where the
    /// kind allows reducing in parts, else the reduced axes moved last and one pass.
    pub(super) fn reduce(&mut self, id: NodeId, r: &incept_ir::ops::Reduce) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let f64 = self.f32_or_f64(id, x)?;
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

    /// Softmax and LogSoftmax over one axis (or, before opset 13, over the dims from it on).
    pub(super) fn softmax(&mut self, id: NodeId, sm: &incept_ir::ops::Softmax) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let f64 = self.f32_or_f64(id, x)?;
        let s = self.shape(x)?;
        let axis = sm.axis as usize;
        let n: usize = s.iter().product();
        let (len, stride) =
            if sm.coerce_2d { (s[axis..].iter().product(), 1) } else { (s[axis], s[axis + 1..].iter().product()) };
        let spec = SoftmaxSpec { groups: n / len.max(1), len, stride, log: sm.log, f64 };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        self.step(Arc::new(spec.clone()), spec.groups, &[src], &[dst], true, &name, node.op.name(), 0);
        Ok(())
    }
}
